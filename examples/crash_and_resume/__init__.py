"""crash and resume: SIGKILL a worker process mid-run, resume elsewhere, only in-flight work re-runs.

`python -m examples.crash_and_resume`
"""

from examples.crash_and_resume.app import CrashRun, run_example
from examples.crash_and_resume.pipeline import build_pipeline, pipeline, side_effects

__all__ = ["CrashRun", "build_pipeline", "pipeline", "run_example", "side_effects"]
