"""The users' project history in the SQLite store (the `user_projects` table).

Functions that run inside a transaction the caller opened (`BEGIN IMMEDIATE` for
writes), so a read, its decision and the write are one atomic step. Values are
encoded by the caller before the transaction. Rows are not sessions' data: `purge`
leaves them alone.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from orchestrator.codec import Codec
from orchestrator.errors import SchemaError, UserProjectNotFoundError
from orchestrator.store import rules
from orchestrator.store.records import SCHEMA_VERSION, Page, UserProjectRecord, check_id
from orchestrator.store.rules import Payload
from orchestrator.store.sqlite.encoding import dump

__all__ = ["ProjectOps", "get_project", "list_projects", "not_found", "put_project", "record_download"]

T = TypeVar("T")

_COLS = (
    "user_id, project_id, v, project_name, description, tech_stack, file_path, size_mb, download_count, "
    "created_at, updated_at, last_accessed, metadata, last_download"
)
_SELECT = f"SELECT {_COLS} FROM user_projects WHERE user_id = ? AND project_id = ?"


def not_found(user_id: str, project_id: str, where: str) -> UserProjectNotFoundError:
    return UserProjectNotFoundError(
        f"user {user_id} has no project {project_id!r} in {where}; store it first with put_user_project "
        f"(or StateAPI.save_user_project), or list the user's projects with `orchestrator projects {user_id}`",
        user_id=user_id,
        project_id=project_id,
    )


def _record(row: Any, codec: Codec, where: str) -> UserProjectRecord:
    uid, pid, v = row[0], row[1], int(row[2])
    if v > SCHEMA_VERSION:
        raise SchemaError.newer(f"project {pid} of user {uid} in {where}", v, SCHEMA_VERSION, user_id=uid,
                                project_id=pid)
    try:
        return UserProjectRecord(
            user_id=uid, project_id=pid, project_name=row[3], description=row[4],
            tech_stack=tuple(json.loads(row[5])), file_path=row[6], size_mb=float(row[7]),
            download_count=int(row[8]), created_at=float(row[9]), updated_at=float(row[10]),
            last_accessed=row[11], metadata=codec.decode(row[12]) or {}, schema_version=v,
        )
    except (ValueError, TypeError) as exc:
        raise SchemaError(
            f"project {pid} of user {uid} in {where} cannot be decoded ({exc}); store it again with "
            f"put_user_project", user_id=uid, project_id=pid,
        ) from exc


def _read(conn: sqlite3.Connection, user_id: str, project_id: str) -> Any:
    return conn.execute(_SELECT, (user_id, project_id)).fetchone()


def get_project(conn: sqlite3.Connection, user_id: str, project_id: str, codec: Codec, where: str) -> UserProjectRecord:
    row = _read(conn, user_id, project_id)
    if row is None:
        raise not_found(user_id, project_id, where)
    return _record(row, codec, where)


def put_project(
    conn: sqlite3.Connection, record: UserProjectRecord, metadata_text: str, now: float, codec: Codec, where: str
) -> UserProjectRecord:
    """Insert, or update the descriptive fields keeping created_at, the count and the last access."""
    row = _read(conn, record.user_id, record.project_id)
    described = (record.project_name, record.description, dump(list(record.tech_stack)), record.file_path,
                 float(record.size_mb), metadata_text)
    if row is None:
        conn.execute(
            f"INSERT INTO user_projects ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
            (record.user_id, record.project_id, SCHEMA_VERSION, *described[:5], record.download_count, now, now,
             record.last_accessed, metadata_text),
        )
    else:
        _record(row, codec, where)  # a row of a newer schema is refused before it is changed
        conn.execute(
            "UPDATE user_projects SET v = ?, project_name = ?, description = ?, tech_stack = ?, file_path = ?, "
            "size_mb = ?, metadata = ?, updated_at = ? WHERE user_id = ? AND project_id = ?",
            (SCHEMA_VERSION, *described, now, record.user_id, record.project_id),
        )
    return get_project(conn, record.user_id, record.project_id, codec, where)


def record_download(
    conn: sqlite3.Connection, user_id: str, project_id: str, download_id: str, now: float, codec: Codec, where: str
) -> UserProjectRecord:
    """Count a download unless it is the one last counted (a retry); the stored record after."""
    row = _read(conn, user_id, project_id)
    if row is None:
        raise not_found(user_id, project_id, where)
    current = _record(row, codec, where)
    if row[13] == download_id:
        return current
    conn.execute(
        "UPDATE user_projects SET download_count = download_count + 1, last_download = ?, last_accessed = ?, "
        "updated_at = ? WHERE user_id = ? AND project_id = ?",
        (download_id, now, now, user_id, project_id),
    )
    return get_project(conn, user_id, project_id, codec, where)


def list_projects(
    conn: sqlite3.Connection, user_id: str, after: str, limit: int, codec: Codec, where: str
) -> Page[UserProjectRecord]:
    """A user's projects by project id after `after` ("" for the first page)."""
    rows = conn.execute(
        f"SELECT {_COLS} FROM user_projects WHERE user_id = ? AND project_id > ? ORDER BY project_id LIMIT ?",
        (user_id, after, limit + 1),
    ).fetchall()
    items = tuple(_record(row, codec, where) for row in rows[:limit])
    return Page(items, items[-1].project_id if len(rows) > limit else None)


class ProjectOps:
    """The `ProjectStore` role of `SQLiteStore`: one transaction per call."""

    if TYPE_CHECKING:
        _where: str
        codec: Codec

        def _run(self, op: str, fn: Callable[[sqlite3.Connection, float], T], *, write: bool = True,
                 session_id: str | None = None) -> Awaitable[T]: ...

    async def put_user_project(self, record: UserProjectRecord) -> UserProjectRecord:
        metadata_text = rules.encode(self.codec, Payload.PROJECT_METADATA, dict(record.metadata),
                                     name=f"{record.project_id} of user {record.user_id}")
        return await self._run(
            "put_user_project",
            lambda c, now: put_project(c, record, metadata_text, now, self.codec, self._where),
        )

    async def get_user_project(self, user_id: str, project_id: str) -> UserProjectRecord:
        check_id("user", user_id)
        check_id("project", project_id)
        return await self._run(
            "get_user_project",
            lambda c, _: get_project(c, user_id, project_id, self.codec, self._where), write=False,
        )

    async def list_user_projects(
        self, user_id: str, *, limit: int = 100, cursor: str | None = None
    ) -> Page[UserProjectRecord]:
        rules.check_page_limit(limit)
        check_id("user", user_id)
        after = "" if cursor is None else check_id("project", cursor, where="the cursor of list_user_projects")
        return await self._run(
            "list_user_projects",
            lambda c, _: list_projects(c, user_id, after, limit, self.codec, self._where), write=False,
        )

    async def record_download(self, user_id: str, project_id: str, download_id: str) -> UserProjectRecord:
        check_id("user", user_id)
        check_id("project", project_id)
        check_id("download", download_id)
        return await self._run(
            "record_download",
            lambda c, now: record_download(c, user_id, project_id, download_id, now, self.codec,
                                                    self._where),
        )
