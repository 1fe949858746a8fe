"""`orchestrator list --user U` and `--type T`: the user and type indexes, from the installed script.

Sessions are seeded through the Store API (a user id and a pipeline type are fields of a
session, not options of `run`), then listed by the real script in a child process
against a SQLite file and the moto server, as in tests/test_cli.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from cli_helpers import cli

from orchestrator.store import NewSession, NewTask, SessionRecord, SessionStatus, open_store

#: (session id, user, pipeline type, ends FAILED)
SEED = [("s1", "u-1", "deploy", False), ("s2", "u-2", "deploy", True), ("s3", "u-1", "build", True),
        ("s4", "u-1", "deploy", True), ("s5", "u-1", "deploy", False), ("s6", "u-2", "build", False)]


@pytest.fixture(params=["sqlite", "moto-server"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path / 'cli.db'}"
    else:
        endpoint = request.getfixturevalue("moto_endpoint")
        yield f"dynamodb://cli-{uuid.uuid4().hex[:10]}?region=us-east-1&endpoint={endpoint}"


def seed(url: str) -> list[SessionRecord]:
    async def go() -> list[SessionRecord]:
        async with open_store(url) as store:
            made = []
            for sid, user, kind, fails in SEED:
                made.append(await store.create_session(NewSession(sid, "demo", user_id=user, pipeline_type=kind),
                                                       [NewTask("t", "a")]))
                if fails:
                    lease = await store.claim_session(sid, "w", 30.0)
                    await store.finish_session(lease, SessionStatus.FAILED, "boom")
            return made

    result: list[SessionRecord] = anyio.run(go)
    return result


def newest_first(made: list[SessionRecord], **match: Any) -> list[str]:
    chosen = [r for r in made if all(getattr(r, k) == v for k, v in match.items())]
    return [r.session_id for r in sorted(chosen, key=lambda r: (r.created_at, r.session_id), reverse=True)]


def test_list_by_user_pages_newest_first_with_the_printed_cursor(store_url: str, tmp_path: Path) -> None:
    made = seed(store_url)
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(10):
        args = ["list", "--user", "u-1", "--limit", "2", "--json"] + (["--cursor", cursor] if cursor else [])
        result = cli(*args, store=store_url, tmp=tmp_path)
        assert result.code == 0, result.err
        page = result.json()
        assert len(page["sessions"]) <= 2
        seen += [s["session_id"] for s in page["sessions"]]
        cursor = page["cursor"]
        if cursor is None:
            break
    assert seen == newest_first(made, user_id="u-1")


def test_list_by_type_and_status_shows_only_those_sessions(store_url: str, tmp_path: Path) -> None:
    made = seed(store_url)
    result = cli("list", "--type", "deploy", "--status", "FAILED", "--json", store=store_url, tmp=tmp_path)
    assert result.code == 0, result.err
    listed = result.json()
    assert [s["session_id"] for s in listed["sessions"]] == ["s4", "s2"]
    assert {s["pipeline_type"] for s in listed["sessions"]} == {"deploy"} and listed["cursor"] is None
    everything = cli("list", "--type", "deploy", "--json", store=store_url, tmp=tmp_path).json()
    assert [s["session_id"] for s in everything["sessions"]] == newest_first(made, pipeline_type="deploy")


def test_list_by_user_and_type_renders_type_user_and_creation_time(store_url: str, tmp_path: Path) -> None:
    seed(store_url)
    result = cli("list", "--user", "u-1", "--type", "deploy", store=store_url, tmp=tmp_path)
    assert result.code == 0, result.err
    header = next(line for line in result.out.splitlines() if "session" in line and "pipeline" in line)
    assert [w for w in header.replace("┃", " ").replace("|", " ").split()] == [
        "session", "pipeline", "type", "user", "status", "progress", "created", "note"]
    rows = {line.split()[1]: line for line in result.out.splitlines() if line.split()[1:2] in (["s1"], ["s4"],
                                                                                                 ["s5"])}
    assert set(rows) == {"s1", "s4", "s5"}
    assert all("deploy" in row and "u-1" in row for row in rows.values())
    assert "FAILED" in rows["s4"] and "PENDING" in rows["s5"]
    assert "3 session(s)" in result.out and "next page" not in result.out


def test_a_status_filter_fills_the_page_from_several_store_pages(store_url: str, tmp_path: Path) -> None:
    seed(store_url)
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(10):
        args = ["list", "--user", "u-1", "--status", "FAILED", "--limit", "1", "--json"]
        result = cli(*args + (["--cursor", cursor] if cursor else []), store=store_url, tmp=tmp_path)
        page = result.json()
        assert len(page["sessions"]) == 1 or page["cursor"] is None, page  # full pages until the last
        seen += [s["session_id"] for s in page["sessions"]]
        cursor = page["cursor"]
        if cursor is None:
            break
    assert seen == ["s4", "s3"]


@pytest.mark.parametrize(("args", "message"), [
    (["--user", "u-1", "--project", "p"], "--project cannot be combined with --user or --type"),
    (["--user", "u" * 300], "user_id="),
    (["--type", "deploy", "--cursor", "bm90LWEtY3Vyc29y"], "cursor"),
])
def test_bad_list_filters_are_one_error_line_and_a_usage_exit(
    args: list[str], message: str, tmp_path: Path
) -> None:
    url = f"sqlite://{tmp_path / 'cli.db'}"
    assert cli("init", store=url, tmp=tmp_path).code == 0
    result = cli("list", *args, store=url, tmp=tmp_path)
    assert result.code == 2, (result.out, result.err)
    assert result.err.startswith("error:") and message in result.err and "Traceback" not in result.err
