"""dynalite, a DynamoDB implementation independent of moto: what it lacks is a warning, and the CLI works on it.

dynalite has no transactions, no UpdateTimeToLive and no point-in-time recovery (its
DescribeTimeToLive always answers DISABLED). The contract suite (tests/test_contract_*.py)
and the scheduler's crash tests (tests/scheduler) run on it too; this module pins how
the table admin treats the missing features and runs the console script against it.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cli_helpers import cli, executions

from orchestrator.store import open_store


@pytest.fixture
def table(drop_dynalite_table: Callable[[str], None]) -> Iterator[str]:
    name = f"dyn-{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        drop_dynalite_table(name)


def _url(endpoint: str, table: str) -> str:
    return f"dynamodb://{table}?region=us-east-1&endpoint={endpoint}&transactions=0"


def _is_ttl_problem(problem: str) -> bool:
    return "TTL DISABLED" in problem


def _is_pitr_problem(problem: str) -> bool:
    return "point-in-time recovery" in problem and "UnknownOperationException" in problem


@pytest.mark.anyio
async def test_initialize_without_ttl_pitr_and_sse_succeeds_and_logs_one_warning_each(
    dynalite_endpoint: str, table: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store(_url(dynalite_endpoint, table))
    try:
        with caplog.at_level(logging.WARNING, logger="orchestrator.store.dynamodb"):
            await store.initialize()
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        # One each: what dynalite lacks (TTL, PITR) and what it cannot turn on (SSE with the KMS key).
        assert len(warnings) == 3, warnings
        assert "could not enable TTL (UpdateTimeToLive: UnknownOperationException" in warnings[0]
        assert _is_pitr_problem(warnings[1]), warnings
        assert "server-side encryption" in warnings[2]
        assert all(table in w for w in warnings)
        await store.initialize()  # idempotent on the table it created
    finally:
        await store.aclose()


@pytest.mark.anyio
async def test_check_names_the_missing_ttl_and_pitr_not_an_unreachable_store(
    dynalite_endpoint: str, table: str
) -> None:
    store = open_store(_url(dynalite_endpoint, table))
    try:
        await store.initialize()
        problems = await store.check()
    finally:
        await store.aclose()
    # dynalite lacks TTL and PITR and cannot encrypt with the KMS key: each named, nothing else.
    assert len(problems) == 3, problems
    assert _is_ttl_problem(problems[0]) and _is_pitr_problem(problems[1]), problems
    assert "server-side encryption" in problems[2]
    assert not any("cannot reach" in p for p in problems)


@pytest.mark.anyio
async def test_check_without_pitr_requested_reports_only_the_missing_ttl(dynalite_endpoint: str, table: str) -> None:
    store = open_store(_url(dynalite_endpoint, table) + "&pitr=0")
    try:
        await store.initialize()
        problems = await store.check()
    finally:
        await store.aclose()
    assert len(problems) == 2 and _is_ttl_problem(problems[0]), problems
    assert not any(_is_pitr_problem(p) for p in problems), problems


def test_cli_init_doctor_run_status_list_and_resume_failed_on_dynalite(
    dynalite_endpoint: str, table: str, tmp_path: Path
) -> None:
    url = _url(dynalite_endpoint, table)
    init = cli("init", "--json", store=url, tmp=tmp_path)
    assert init.code == 0, init.err
    assert init.json()["location"] == table
    assert "could not enable TTL" in init.err  # the missing feature is a logged warning
    again = cli("init", "--json", store=url, tmp=tmp_path)
    assert again.code == 0, again.err

    doctor = cli("doctor", "--json", store=url, tmp=tmp_path)
    report = doctor.json()
    # Reachable, keys and indexes as expected: only dynalite's missing TTL, PITR and SSE are reported.
    assert (doctor.code, report["ok"], report["endpoint"]) == (1, False, dynalite_endpoint), doctor.err
    assert [_is_ttl_problem(p) or _is_pitr_problem(p) or "server-side encryption" in p
            for p in report["problems"]] == [True, True, True], report

    ran = cli("run", "demo_app:small", "--input", '{"n": 1}', "--session-id", "ok-1", "--json", store=url,
              tmp=tmp_path)
    assert ran.code == 0, ran.err
    assert ran.json()["status"] == "COMPLETED"
    assert ran.json()["outputs"]["ship"] == {"task": "ship", "deps": ["code", "docs"]}
    assert sorted(t for t, _, _ in executions(tmp_path, "ok-1")) == ["code", "docs", "plan", "ship"]

    status = cli("status", "ok-1", "--json", store=url, tmp=tmp_path)
    assert status.code == 0, status.err
    assert status.json()["session"]["status"] == "COMPLETED"
    assert {tid: t["status"] for tid, t in status.json()["tasks"].items()} == {
        "plan": "COMPLETED", "code": "COMPLETED", "docs": "COMPLETED", "ship": "COMPLETED"
    }

    marker = tmp_path / "fixed"
    failed = cli("run", "demo_app:flaky", "--input", json.dumps({"marker": str(marker)}), "--session-id", "bad-1", "--json",
                 store=url, tmp=tmp_path)
    assert failed.code == 1, failed.err
    listed = cli("list", "--status", "FAILED", "--json", store=url, tmp=tmp_path)  # the status index (GSI1)
    assert [s["session_id"] for s in listed.json()["sessions"]] == ["bad-1"]
    marker.write_text("ok")
    swept = cli("resume-failed", "--app", "demo_app:flaky", "--older-than", "0s", "--json", store=url, tmp=tmp_path)
    assert swept.code == 0, swept.err
    assert swept.json()["resumed"] == {"bad-1": "COMPLETED"}
    assert [(t, a) for t, a, _ in executions(tmp_path, "bad-1")] == [("prep", 1), ("fragile", 1), ("fragile", 2),
                                                                        ("after", 1)]
