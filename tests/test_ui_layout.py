"""The DAG picture's layout: a pure function from `task -> dependencies` to boxes and arrows."""

from __future__ import annotations

import pytest

from orchestrator.ui.layout import BOX_H, BOX_W, layout_dag


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return abs(a[0] - b[0]) < BOX_W and abs(a[1] - b[1]) < BOX_H


def test_a_task_sits_below_every_task_it_depends_on() -> None:
    layout = layout_dag({"plan": [], "code": ["plan"], "docs": ["plan"], "ship": ["code", "docs"]})
    y = {t: b.y for t, b in layout.boxes.items()}
    assert y["plan"] < y["code"] == y["docs"] < y["ship"]


def test_one_arrow_per_dependency_from_the_bottom_of_the_dependency_to_the_top_of_the_task() -> None:
    layout = layout_dag({"a": [], "b": ["a"]})
    (arrow,) = layout.arrows
    a, b = layout.boxes["a"], layout.boxes["b"]
    assert (arrow.source, arrow.target) == ("a", "b")
    assert arrow.start == (a.x + BOX_W / 2, a.y + BOX_H) and arrow.end == (b.x + BOX_W / 2, b.y)


def test_dependencies_on_unknown_tasks_are_ignored() -> None:
    layout = layout_dag({"a": ["gone"]})
    assert set(layout.boxes) == {"a"} and layout.arrows == ()


def test_a_wide_layer_wraps_onto_rows_of_at_most_max_row_boxes() -> None:
    layout = layout_dag({f"t{n:03d}": [] for n in range(25)}, max_row=10)
    rows: dict[float, int] = {}
    for box in layout.boxes.values():
        rows[box.y] = rows.get(box.y, 0) + 1
    assert sorted(rows.values()) == [5, 10, 10]


def test_no_two_boxes_overlap_and_all_fit_in_the_picture_at_500_tasks() -> None:
    graph = {f"fan-{n:03d}": ["root"] for n in range(480)}
    graph["root"] = []
    graph.update({f"join-{n}": [f"fan-{m:03d}" for m in range(n, 480, 19)] for n in range(19)})
    layout = layout_dag(graph)
    corners = [(b.x, b.y) for b in layout.boxes.values()]
    assert len(corners) == 500 and len(set(corners)) == 500
    assert not any(_overlap(a, b) for i, a in enumerate(corners) for b in corners[i + 1:] if abs(a[1] - b[1]) < BOX_H)
    assert all(x + BOX_W <= layout.width and y + BOX_H <= layout.height for x, y in corners)


def test_boxes_follow_the_order_of_their_dependencies_to_avoid_crossings() -> None:
    layout = layout_dag({"a": [], "b": [], "under-b": ["b"], "under-a": ["a"]})
    assert layout.boxes["a"].x < layout.boxes["b"].x
    assert layout.boxes["under-a"].x < layout.boxes["under-b"].x


def test_the_same_graph_always_gets_the_same_layout() -> None:
    graph = {"x": [], "y": ["x"], "z": ["x"], "w": ["y", "z"]}
    assert layout_dag(graph) == layout_dag(dict(reversed(list(graph.items()))))


def test_an_empty_graph_is_an_empty_picture() -> None:
    layout = layout_dag({})
    assert layout.boxes == {} and layout.width > 0 and layout.height > 0


def test_max_row_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_row"):
        layout_dag({"a": []}, max_row=0)


def test_a_running_task_waiting_for_a_resource_is_drawn_as_waiting_for_it() -> None:
    from orchestrator.store import Progress, TaskRecord, TaskStatus
    from orchestrator.ui.dag_svg import dag_svg

    tasks = {
        "ask": TaskRecord("ask", "llm", TaskStatus.RUNNING, progress=Progress(phase="waiting-for-resource",
                                                                               step="openai")),
        "other": TaskRecord("other", "plain", TaskStatus.RUNNING),
    }
    svg = dag_svg(layout_dag({"ask": [], "other": []}), tasks)
    assert 'class="task s-RUNNING resource-wait" data-task="ask"' in svg and "waits for openai" in svg
    assert 'class="task s-RUNNING" data-task="other"' in svg
