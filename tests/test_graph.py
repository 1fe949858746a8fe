"""Pipeline validation, the runtime DAG (ready sets, skips, additions), its cost, rendering."""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest

from orchestrator.agents import AgentSpec, RetryPolicy, agent
from orchestrator.errors import CycleError, PipelineDefinitionError, TaskNotFoundError, ValidationError
from orchestrator.graph import DagState, Pipeline, Task, render
from orchestrator.store.records import Edge, NewTask, TaskRecord, TaskStatus


@agent
async def plan(ctx: Any) -> str:
    return "plan"


@agent(name="code", retry=RetryPolicy(max_attempts=5))
async def code_agent(ctx: Any) -> str:
    return "code"


@agent
def review(ctx: Any) -> str:
    return "review"


def _pipeline() -> Pipeline:
    return (
        Pipeline("build", agents=[plan, code_agent, review])
        .task("plan", "plan")
        .task("code", "code", depends_on=["plan"], priority=0)
        .task("review", review, depends_on=["code"], max_attempts=2)
    )


def _records(spec: dict[str, tuple[str, ...]], *, priority: dict[str, int] | None = None) -> dict[str, TaskRecord]:
    prio = priority or {}
    return {
        tid: TaskRecord(task_id=tid, agent="a", status=TaskStatus.PENDING, priority=prio.get(tid, 2), depends_on=deps)
        for tid, deps in spec.items()
    }


def _edges(spec: dict[str, tuple[str, ...]]) -> list[Edge]:
    return [Edge(tid, dep) for tid, deps in spec.items() for dep in deps]


def _dag(spec: dict[str, tuple[str, ...]], **kw: Any) -> DagState:
    return DagState.from_records(_records(spec, **kw), _edges(spec))


# -- Pipeline -------------------------------------------------------------------------------


def test_valid_pipeline_resolves_max_attempts_from_agents() -> None:
    tasks = {t.task_id: t for t in _pipeline().new_tasks()}
    assert tasks["plan"].max_attempts == 3  # the default RetryPolicy
    assert tasks["code"].max_attempts == 5  # the agent's policy
    assert tasks["review"].max_attempts == 2  # the task's own
    assert tasks["code"].depends_on == ("plan",)
    assert tasks["code"].priority == 0


def test_task_given_an_agent_object_adds_the_agent() -> None:
    pipe = Pipeline("p").task("r", review)
    assert pipe.agents["review"].fn is review
    assert pipe.agent_for("r").name == "review"


def test_definition_carries_name_version_and_tasks() -> None:
    definition = Pipeline("p", version="7", agents=[plan]).task("x", "plan").definition()
    assert (definition.name, definition.version) == ("p", "7")
    assert [t.task_id for t in definition.tasks] == ["x"]


def test_cycle_is_named_in_order() -> None:
    pipe = (
        Pipeline("build", agents=[plan])
        .task("a", "plan", depends_on=["c"])
        .task("b", "plan", depends_on=["a"])
        .task("c", "plan", depends_on=["b"])
    )
    with pytest.raises(CycleError) as info:
        pipe.validate()
    assert info.value.cycle == ["a", "c", "b"]
    assert "pipeline build has a cycle: a -> c -> b -> a" in str(info.value)
    assert "remove one of these dependencies" in str(info.value)


def test_self_dependency_is_a_cycle() -> None:
    with pytest.raises(CycleError, match="a -> a"):
        Pipeline("p", agents=[plan]).task("a", "plan", depends_on="a").validate()


def test_unknown_dependency_names_task_and_close_match() -> None:
    pipe = Pipeline("p", agents=[plan]).task("build", "plan").task("test", "plan", depends_on=["biuld"])
    with pytest.raises(PipelineDefinitionError) as info:
        pipe.validate()
    msg = str(info.value)
    assert "task 'test'" in msg and "unknown task 'biuld'" in msg and "did you mean 'build'" in msg
    assert info.value.task_id == "test"


def test_duplicate_task_id_is_rejected() -> None:
    pipe = Pipeline("p", agents=[plan]).task("a", "plan").task("a", "plan")
    with pytest.raises(PipelineDefinitionError, match="two tasks with id 'a'"):
        pipe.validate()


def test_unknown_agent_lists_known_agents() -> None:
    pipe = Pipeline("p", agents=[plan, review]).task("a", "plann")
    with pytest.raises(PipelineDefinitionError) as info:
        pipe.validate()
    assert "unknown agent 'plann'" in str(info.value)
    assert "known agents: plan, review" in str(info.value)


def test_two_agents_with_one_name_are_rejected() -> None:
    async def other(ctx: Any) -> None:
        return None

    pipe = Pipeline("p", agents=[plan, AgentSpec(name="plan", fn=other)]).task("a", "plan")
    with pytest.raises(PipelineDefinitionError, match="two different agents named 'plan'"):
        pipe.validate()


def test_same_agent_given_twice_is_accepted() -> None:
    Pipeline("p", agents=[plan, plan]).task("a", plan).validate()


def test_invalid_task_id_is_rejected() -> None:
    with pytest.raises(ValidationError, match="task id 'a#b'"):
        Pipeline("p", agents=[plan]).task("a#b", "plan").validate()


def test_empty_pipeline_is_rejected() -> None:
    with pytest.raises(PipelineDefinitionError, match="pipeline 'p' has no tasks"):
        Pipeline("p").validate()


def test_bad_priority_is_rejected() -> None:
    with pytest.raises(PipelineDefinitionError, match="priority 7"):
        Pipeline("p", tasks=[Task("a", "plan", priority=7)], agents=[plan]).validate()


def test_new_tasks_validates_first() -> None:
    with pytest.raises(PipelineDefinitionError):
        Pipeline("p").task("a", "missing").new_tasks()


def test_agent_for_unknown_task_names_it() -> None:
    with pytest.raises(TaskNotFoundError, match="no task 'nope'"):
        _pipeline().agent_for("nope")


# -- DagState -------------------------------------------------------------------------------


def test_ready_orders_by_priority_then_id() -> None:
    dag = _dag({"c": (), "b": (), "a": (), "z": ()}, priority={"z": 0, "c": 1})
    assert dag.ready() == ["z", "c", "a", "b"]
    assert dag.ready(limit=2) == ["z", "c"]
    assert dag.ready() == ["z", "c", "a", "b"]  # reading the ready set does not consume it


def test_task_becomes_ready_when_its_last_dependency_completes() -> None:
    dag = _dag({"a": (), "b": (), "c": ("a", "b")})
    for tid in ("a", "b"):
        dag.mark(tid, TaskStatus.RUNNING)
    assert dag.ready() == []
    dag.mark("a", TaskStatus.COMPLETED)
    assert dag.ready() == []
    dag.mark("b", TaskStatus.COMPLETED)
    assert dag.ready() == ["c"]


def test_retry_back_to_pending_is_ready_again() -> None:
    dag = _dag({"a": ()})
    dag.mark("a", TaskStatus.RUNNING)
    assert dag.ready() == []
    dag.mark("a", TaskStatus.PENDING)
    assert dag.ready() == ["a"]


def test_completed_records_unlock_dependents_on_load() -> None:
    records = _records({"a": (), "b": ("a",), "c": ("b",)})
    records["a"] = TaskRecord(task_id="a", agent="a", status=TaskStatus.COMPLETED)
    dag = DagState.from_records(records, _edges({"b": ("a",), "c": ("b",)}))
    assert dag.ready() == ["b"]
    assert (dag.completed, dag.done, dag.total) == (1, 1, 3)


def test_dependents_closure_is_transitive() -> None:
    dag = _dag({"a": (), "b": ("a",), "c": ("b",), "d": ("a", "c"), "e": ()})
    assert dag.dependents_closure("a") == {"b", "c", "d"}
    assert dag.dependents_closure("e") == set()


def test_finished_counts_final_statuses() -> None:
    dag = _dag({"a": (), "b": ("a",)})
    dag.mark("a", TaskStatus.FAILED)
    for tid in dag.dependents_closure("a"):
        dag.mark(tid, TaskStatus.SKIPPED)
    assert dag.is_finished
    assert dag.unfinished() == []
    assert dag.counts() == {TaskStatus.FAILED: 1, TaskStatus.SKIPPED: 1}


def test_waiting_task_is_unfinished() -> None:
    dag = _dag({"a": (), "b": ()})
    dag.mark("a", TaskStatus.COMPLETED)
    dag.mark("b", TaskStatus.WAITING)
    assert not dag.is_finished
    assert dag.unfinished() == ["b"]


def test_outputs_of_deps_maps_dependency_ids() -> None:
    dag = _dag({"a": (), "b": (), "c": ("a", "b")})
    assert dag.outputs_of_deps("c", {"a": 1, "b": {"x": 2}, "z": 3}) == {"a": 1, "b": {"x": 2}}


def test_stored_cycle_is_rejected_on_load() -> None:
    with pytest.raises(CycleError, match="a -> b -> a"):
        _dag({"a": ("b",), "b": ("a",), "c": ()})


def test_stored_edge_to_unknown_task_is_rejected() -> None:
    with pytest.raises(PipelineDefinitionError, match="unknown task 'ghost'"):
        DagState.from_records(_records({"a": ()}), [Edge("a", "ghost")])


def test_added_tasks_join_the_ready_set() -> None:
    dag = _dag({"root": ()})
    dag.mark("root", TaskStatus.COMPLETED)
    added = dag.add_tasks(
        [NewTask("sub-1", "a", depends_on=("root",)), NewTask("sub-2", "a", depends_on=("sub-1",), priority=0)]
    )
    assert added == ["sub-1", "sub-2"]
    assert dag.ready() == ["sub-1"]
    dag.mark("sub-1", TaskStatus.COMPLETED)
    assert dag.ready() == ["sub-2"]
    assert dag.dependents_closure("root") == {"sub-1", "sub-2"}


def test_re_adding_the_same_task_is_a_no_op() -> None:
    dag = _dag({"root": ()})
    assert dag.add_tasks([NewTask("s", "a", depends_on=("root",))]) == ["s"]
    assert dag.add_tasks([NewTask("s", "a", depends_on=("root",))]) == []
    assert dag.total == 2


def test_re_adding_a_task_differently_is_rejected() -> None:
    dag = _dag({"root": ()})
    dag.add_tasks([NewTask("s", "a", depends_on=("root",))])
    with pytest.raises(PipelineDefinitionError, match="task 's' already exists with another definition"):
        dag.add_tasks([NewTask("s", "b")])


def test_added_cycle_is_rejected_and_nothing_changes() -> None:
    dag = _dag({"root": ()})
    batch = [
        NewTask("ok", "a"),
        NewTask("x", "a", depends_on=("root", "z")),
        NewTask("y", "a", depends_on=("x",)),
        NewTask("z", "a", depends_on=("y",)),
    ]
    with pytest.raises(CycleError) as info:
        dag.add_tasks(batch)
    assert info.value.cycle == ["x", "z", "y"]
    assert dag.task_ids == ["root"]
    assert dag.ready() == ["root"]


def test_added_unknown_dependency_is_rejected_and_nothing_changes() -> None:
    dag = _dag({"root": ()})
    with pytest.raises(PipelineDefinitionError, match=r"depends on unknown task 'rot'.*did you mean 'root'"):
        dag.add_tasks([NewTask("ok", "a"), NewTask("x", "a", depends_on=("rot",))])
    assert dag.task_ids == ["root"]


def test_added_unknown_agent_is_rejected_when_agents_are_known() -> None:
    dag = _dag({"root": ()})
    with pytest.raises(PipelineDefinitionError, match="unknown agent 'nope'; known agents: a"):
        dag.add_tasks([NewTask("x", "nope")], known_agents=["a"])


def test_mark_unknown_task_names_it() -> None:
    with pytest.raises(TaskNotFoundError, match="no task 'b'"):
        _dag({"a": ()}).mark("b", TaskStatus.COMPLETED)


# -- cost: linear in tasks + edges ---------------------------------------------------------


def _chain(n: int) -> dict[str, tuple[str, ...]]:
    return {f"t{i:05d}": ((f"t{i - 1:05d}",) if i else ()) for i in range(n)}


def _fan_out(n: int) -> dict[str, tuple[str, ...]]:
    spec: dict[str, tuple[str, ...]] = {"root": ()}
    spec.update({f"t{i:05d}": ("root",) for i in range(n - 2)})
    spec["sink"] = tuple(f"t{i:05d}" for i in range(n - 2))
    return spec


def _run_to_completion(spec: dict[str, tuple[str, ...]], limit: int | None) -> DagState:
    """What a scheduler does: start what is ready (up to a concurrency limit), complete it."""
    dag = DagState.from_records(_records(spec), _edges(spec))
    while not dag.is_finished:
        batch = dag.ready(limit)
        assert batch, "no ready task in an unfinished DAG"
        for tid in batch:
            dag.mark(tid, TaskStatus.RUNNING)
        for tid in batch:
            dag.mark(tid, TaskStatus.COMPLETED)
    return dag


def _lines_executed(fn: Callable[[], object]) -> int:
    """Python lines run inside orchestrator/graph/dag.py: a machine-independent operation count."""
    import orchestrator.graph.dag as graph_module

    target = graph_module.__file__
    count = 0

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal count
        if frame.f_code.co_filename != target:
            return None
        if event == "line":
            count += 1
        return tracer

    sys.settrace(tracer)
    try:
        fn()
    finally:
        sys.settrace(None)
    return count


@pytest.mark.parametrize("shape", [_chain, _fan_out], ids=["chain", "fan-out"])
@pytest.mark.parametrize("limit", [None, 8], ids=["unbounded", "limit-8"])
def test_scheduling_work_grows_linearly(shape: Callable[[int], dict[str, tuple[str, ...]]], limit: int | None) -> None:
    small = _lines_executed(lambda: _run_to_completion(shape(2000), limit))
    large = _lines_executed(lambda: _run_to_completion(shape(8000), limit))
    # 4x the tasks: linear work is ~4x; quadratic (a rescan per completion) would be ~16x.
    assert large / small < 5.0, (small, large)


def test_ten_thousand_task_dag_runs_to_completion() -> None:
    dag = _run_to_completion(_fan_out(10_000), None)
    assert dag.completed == dag.total == 10_000


# -- render ---------------------------------------------------------------------------------


def _render_args() -> tuple[list[TaskRecord], list[Edge]]:
    tasks = [
        TaskRecord(task_id="plan", agent="planner", status=TaskStatus.COMPLETED),
        TaskRecord(task_id="code", agent="coder", status=TaskStatus.FAILED, depends_on=("plan",)),
        TaskRecord(task_id="test", agent="tester", status=TaskStatus.SKIPPED, depends_on=("code",)),
    ]
    return tasks, [Edge("code", "plan"), Edge("test", "code")]


def test_render_mermaid_colours_by_status() -> None:
    tasks, edges = _render_args()
    out = render(tasks, edges, format="mermaid")
    assert out.startswith("flowchart TD\n")
    assert 'n0["plan<br/><small>planner</small><br/>COMPLETED"]:::completed' in out
    assert "n1[" in out and ":::failed" in out and ":::skipped" in out
    assert "n0 --> n1" in out and "n1 --> n2" in out
    assert "classDef completed fill:#c8e6c9" in out
    assert "classDef failed fill:#ffcdd2" in out


def test_render_dot_fills_by_status() -> None:
    tasks, edges = _render_args()
    out = render(tasks, edges, {"test": "running"}, format="dot")
    assert out.startswith("digraph pipeline {")
    assert '"plan" -> "code";' in out
    assert '"plan" [label="plan\\nplanner\\nCOMPLETED", fillcolor="#c8e6c9"' in out
    assert '"test" [label="test\\ntester\\nRUNNING", fillcolor="#bbdefb"' in out


def test_render_text_groups_by_level() -> None:
    tasks, edges = _render_args()
    assert render(tasks, edges, format="text") == (
        "level 0:\n"
        "  plan [COMPLETED] (planner)\n"
        "level 1:\n"
        "  code [FAILED] (coder) <- plan\n"
        "level 2:\n"
        "  test [SKIPPED] (tester) <- code\n"
    )


def test_render_pipeline_and_dag_state() -> None:
    assert "level 1:\n  code (code) <- plan" in _pipeline().render("text")
    dag = _dag({"a": (), "b": ("a",)})
    dag.mark("a", TaskStatus.COMPLETED)
    assert "  a [COMPLETED] (a)" in dag.render("text")
    assert "  b [PENDING] (a) <- a" in dag.render("text")


def test_render_escapes_quotes_in_dot() -> None:
    out = render(['say"hi'], [], format="dot")
    assert '"say\\"hi" [label="say\\"hi"' in out


def test_render_rejects_unknown_format_listing_formats() -> None:
    with pytest.raises(ValidationError, match="unknown render format 'svg'; use one of mermaid, dot, text"):
        render(["a"], [], format="svg")  # type: ignore[arg-type]
