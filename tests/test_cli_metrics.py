"""`orchestrator metrics`, as printed: a project's view keeps its own agents, and custom
metrics recorded with `record_metric` are shown (they were stored but never printed).

Two projects share the agent `step` (p-a's session ran it 4 times, p-b's once); only p-b
ran `fragile`. A project's view counts only its own sessions' tasks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from cli_helpers import Result, cli

from orchestrator import StateAPI
from orchestrator.store import open_store

TOKENS = "tokens [used]"  # a name rich would read as markup
LATENCY = "llm_latency"
COST = "cost"


async def _record_custom(url: str) -> None:
    async with open_store(url) as store:
        api = StateAPI(store)
        await api.record_metric({"metric_name": TOKENS, "agent_name": "step", "value": 1200})
        await api.record_metric({"metric_name": TOKENS, "agent_name": "step", "value": 800})
        await api.record_metric({"metric_name": LATENCY, "agent_name": "fragile", "value": 1.5, "unit": "s"})
        await api.record_metric({"metric_name": COST, "value": 0.25})
        await api.flush()


@pytest.fixture
def url(tmp_path: Path) -> str:
    """p-a ran `small` (agent step), p-b ran `flaky` (step and fragile, which fails); custom metrics recorded."""
    store = f"sqlite://{tmp_path / 'metrics.db'}"
    assert cli("run", "demo_app:small", "--project", "p-a", store=store, tmp=tmp_path).code == 0
    assert cli("run", "demo_app:flaky", "--project", "p-b", store=store, tmp=tmp_path).code == 1
    anyio.run(_record_custom, store)
    return store


def rows(result: Result) -> list[list[str]]:
    """The body rows of every table printed, as lists of cells."""
    assert result.code == 0 and "Traceback" not in result.err, result.err
    return [[cell.strip() for cell in line.strip("│").split("│")] for line in result.out.splitlines()
            if line.startswith("│")]


def first_cells(result: Result) -> set[str]:
    return {row[0] for row in rows(result)}


def test_metrics_for_a_project_shows_only_the_agents_its_sessions_ran(url: str, tmp_path: Path) -> None:
    only_a = cli("metrics", "--project", "p-a", store=url, tmp=tmp_path)
    assert "step" in first_cells(only_a) and "fragile" not in first_cells(only_a)
    assert "agents of project p-a on " in only_a.out
    both = first_cells(cli("metrics", "--project", "p-b", store=url, tmp=tmp_path))
    assert {"step", "fragile"} <= both


def test_metrics_for_a_project_counts_only_its_own_sessions_tasks(url: str, tmp_path: Path) -> None:
    def step_count(*project: str) -> int:
        body = cli("metrics", *project, "--json", store=url, tmp=tmp_path).json()
        return int(next(row["count"] for row in body["agents"] if row["agent"] == "step"))

    assert (step_count("--project", "p-a"), step_count("--project", "p-b"), step_count()) == (4, 1, 5)


def test_metrics_for_a_project_in_json_lists_only_its_agents_and_its_outcomes(url: str, tmp_path: Path) -> None:
    body: dict[str, Any] = cli("metrics", "--project", "p-a", "--json", store=url, tmp=tmp_path).json()
    assert [row["agent"] for row in body["agents"]] == ["step"]
    assert {row["agent"] for row in body["hourly"]} == {"step"}
    assert [(p["project_id"], p["completed"]) for p in body["projects"]] == [("p-a", 1)]


def test_metrics_shows_custom_metrics_as_a_table(url: str, tmp_path: Path) -> None:
    result = cli("metrics", store=url, tmp=tmp_path)
    assert "custom metrics on " in result.out
    custom = {(row[0], row[1]): row[2:] for row in rows(result) if row[0] in (TOKENS, LATENCY, COST)}
    assert custom[(TOKENS, "step")] == ["2", "0", "2000", "1000", "-", "-"]
    assert custom[(LATENCY, "fragile")][:4] == ["1", "0", "1.5s", "1.5s"]
    assert custom[(COST, "-")][:4] == ["1", "0", "0.25", "0.25"]


def test_metrics_json_lists_custom_metrics_with_their_kind(url: str, tmp_path: Path) -> None:
    body = cli("metrics", "--json", store=url, tmp=tmp_path).json()
    custom = {row["name"]: row for row in body["metrics"]}
    assert set(custom) == {TOKENS, LATENCY, COST}
    assert (custom[TOKENS]["kind"], custom[TOKENS]["sum"], custom[TOKENS]["count"]) == ("value", 2000.0, 2)
    assert (custom[LATENCY]["kind"], custom[LATENCY]["mean_ms"]) == ("duration", 1500.0)
    assert {row["agent"] for row in body["agents"]} == {"step", "fragile"}  # task counters stay apart


def test_metrics_for_a_project_keeps_the_custom_metrics_of_its_agents(url: str, tmp_path: Path) -> None:
    result = cli("metrics", "--project", "p-a", store=url, tmp=tmp_path)
    assert TOKENS in first_cells(result)
    assert LATENCY not in first_cells(result) and COST not in first_cells(result)
