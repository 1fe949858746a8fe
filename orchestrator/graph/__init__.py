"""Pipelines as DAGs: declare and validate them, track a session's ready set, render them.

`Pipeline` (pipeline.py) is what users build and validate before anything is written;
`DagState` (dag.py) is the scheduler's view of one session's DAG at run time; `render`
(render.py) draws either. The graph checks themselves are the rulebook's
(`orchestrator.store.rules.check_graph`), shared with both store backends.
"""

from orchestrator.graph.dag import DagState
from orchestrator.graph.pipeline import Pipeline, Task
from orchestrator.graph.render import RENDER_FORMATS, RenderFormat, render

__all__ = ["RENDER_FORMATS", "DagState", "Pipeline", "RenderFormat", "Task", "render"]
