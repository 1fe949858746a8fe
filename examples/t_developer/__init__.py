"""t-developer: a natural-language request -> a generated project and its zip.

`python -m examples.t_developer "a notes app with Vue and a Python API" --production`
"""

from examples.t_developer.app import TDeveloperRun, generate_project, record_download, run_example
from examples.t_developer.pipeline import AGENTS, build_pipeline, pipeline

__all__ = ["AGENTS", "TDeveloperRun", "build_pipeline", "generate_project", "pipeline", "record_download", "run_example"]
