"""deploy progress: 29 shell steps reporting `[n/29] phase: step`.

`python -m examples.deploy_progress`
"""

from examples.deploy_progress.app import ExternalDeploy, build_pipeline, pipeline, run_external, run_scheduled
from examples.deploy_progress.steps import STEPS, TOTAL, Step

__all__ = ["STEPS", "TOTAL", "ExternalDeploy", "Step", "build_pipeline", "pipeline", "run_external", "run_scheduled"]
