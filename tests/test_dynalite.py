"""dynalite, a DynamoDB implementation independent of moto: what it lacks is a warning.

dynalite has no transactions, no UpdateTimeToLive and no point-in-time recovery (its
DescribeTimeToLive always answers DISABLED). This module pins how the table admin
treats the missing features.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator

import pytest

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
    return "does not support point-in-time recovery" in problem


@pytest.mark.anyio
async def test_initialize_without_ttl_and_pitr_succeeds_and_logs_one_warning_each(
    dynalite_endpoint: str, table: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store(_url(dynalite_endpoint, table))
    try:
        with caplog.at_level(logging.WARNING, logger="orchestrator.store.dynamodb"):
            await store.initialize()
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 2, warnings
        assert "does not support TTL (UpdateTimeToLive: UnknownOperationException)" in warnings[0]
        assert "does not support point-in-time recovery (UpdateContinuousBackups: UnknownOperationException)" \
            in warnings[1]
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
    assert len(problems) == 2, problems
    assert _is_ttl_problem(problems[0]) and _is_pitr_problem(problems[1]), problems
    assert "pitr=0" in problems[1]
    assert not any("cannot reach" in p for p in problems)


@pytest.mark.anyio
async def test_check_without_pitr_requested_reports_only_the_missing_ttl(dynalite_endpoint: str, table: str) -> None:
    store = open_store(_url(dynalite_endpoint, table) + "&pitr=0")
    try:
        await store.initialize()
        problems = await store.check()
    finally:
        await store.aclose()
    assert len(problems) == 1 and _is_ttl_problem(problems[0]), problems
