"""The SQLite file: its tables, how it is created (0600, WAL) and how a foreign file is refused.

Opening never writes to a file it does not recognise: the header is read first, the
tables are inspected with a plain read, and only an empty file or one carrying our
`meta` marker at a known schema version is switched to WAL and written.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from orchestrator.errors import SchemaError, StoreError, StoreUnavailableError
from orchestrator.store.records import SCHEMA_VERSION

__all__ = [
    "APPLICATION",
    "ADDED",
    "TABLES",
    "add_missing",
    "check_existing",
    "connect",
    "connect_read_only",
    "missing_additions",
    "create_file",
    "file_problems",
    "pragmas",
    "inspect",
    "shadow_missing_columns",
    "is_busy",
    "verify_or_create",
]

#: The marker in `meta` that says this file was written by this SDK.
APPLICATION = "durable-orchestrator"
_APPLICATION_ID = 0x4F524348  # "ORCH" in the SQLite header, so `file` and tools can tell
_SQLITE_HEADER = b"SQLite format 3\x00"
_SQLITE_READONLY_DIRECTORY = 1544  # SQLITE_READONLY | (6 << 8): no -shm, and the directory is read-only

_DDL = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE sessions (
    session_id TEXT PRIMARY KEY, v INTEGER NOT NULL,
    pipeline TEXT NOT NULL, pipeline_version TEXT NOT NULL, status TEXT NOT NULL,
    owner_kind TEXT NOT NULL, input TEXT, project_id TEXT, user_id TEXT, pipeline_type TEXT,
    progress TEXT NOT NULL, current_agents TEXT NOT NULL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, completed_at REAL,
    lease_owner TEXT, lease_expires_at REAL, fence INTEGER NOT NULL,
    signal_seq INTEGER NOT NULL, wait_seq INTEGER NOT NULL, wake_at REAL,
    redrive_count INTEGER NOT NULL, max_redrives INTEGER NOT NULL,
    needs_human INTEGER NOT NULL, needs_human_reason TEXT, cancel_requested INTEGER NOT NULL,
    reason TEXT, trace_context TEXT NOT NULL, metadata TEXT NOT NULL,
    ttl_seconds REAL, expires_at REAL, status_time REAL NOT NULL
);
CREATE INDEX sessions_by_status ON sessions (status, status_time, session_id);
CREATE INDEX sessions_by_project ON sessions (project_id, created_at, session_id)
    WHERE project_id IS NOT NULL;
CREATE INDEX sessions_by_end ON sessions (completed_at) WHERE completed_at IS NOT NULL;
CREATE INDEX sessions_by_expiry ON sessions (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE tasks (
    session_id TEXT NOT NULL, task_id TEXT NOT NULL, v INTEGER NOT NULL,
    agent TEXT NOT NULL, status TEXT NOT NULL, input TEXT,
    priority INTEGER NOT NULL, max_attempts INTEGER NOT NULL,
    fence INTEGER NOT NULL, attempt INTEGER NOT NULL, attempt_base INTEGER NOT NULL,
    not_before REAL, last_error TEXT, history TEXT NOT NULL,
    started_at REAL, ended_at REAL, output TEXT, progress TEXT NOT NULL, checkpoint TEXT,
    added_by TEXT, updated_at REAL NOT NULL, waiting_for TEXT,
    PRIMARY KEY (session_id, task_id)
);
CREATE TABLE edges (
    session_id TEXT NOT NULL, task_id TEXT NOT NULL, depends_on TEXT NOT NULL,
    pos INTEGER NOT NULL, v INTEGER NOT NULL,
    PRIMARY KEY (session_id, task_id, depends_on)
) WITHOUT ROWID;
CREATE TABLE staged_tasks (
    session_id TEXT NOT NULL, parent TEXT NOT NULL, fence INTEGER NOT NULL,
    attempt INTEGER NOT NULL, task_id TEXT NOT NULL, v INTEGER NOT NULL,
    agent TEXT NOT NULL, input TEXT, priority INTEGER NOT NULL, max_attempts INTEGER NOT NULL,
    depends_on TEXT NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY (session_id, parent, fence, attempt, task_id)
);
CREATE INDEX staged_by_task ON staged_tasks (session_id, task_id);
CREATE INDEX staged_by_age ON staged_tasks (created_at);
CREATE TABLE signals (
    session_id TEXT NOT NULL, task_id TEXT NOT NULL, name TEXT NOT NULL, v INTEGER NOT NULL,
    payload TEXT, seq INTEGER NOT NULL, sent_at REAL NOT NULL,
    PRIMARY KEY (session_id, task_id, name)
);
CREATE TABLE events (
    session_id TEXT NOT NULL, cursor TEXT NOT NULL, v INTEGER NOT NULL,
    at REAL NOT NULL, writer TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
    task_id TEXT, message TEXT NOT NULL, data TEXT NOT NULL, level TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (session_id, cursor)
);
CREATE INDEX events_by_expiry ON events (expires_at);
CREATE TABLE metrics (
    day TEXT NOT NULL, hour INTEGER NOT NULL, name TEXT NOT NULL, agent TEXT NOT NULL,
    writer TEXT NOT NULL, v INTEGER NOT NULL, seq INTEGER NOT NULL,
    count INTEGER NOT NULL, errors INTEGER NOT NULL, blocked INTEGER NOT NULL,
    sum_ms REAL NOT NULL, min_ms REAL, max_ms REAL, buckets TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (day, hour, name, agent, writer)
);
CREATE INDEX metrics_by_expiry ON metrics (expires_at);
CREATE TABLE pipelines (
    name TEXT NOT NULL, version TEXT NOT NULL, v INTEGER NOT NULL, digest TEXT NOT NULL,
    definition TEXT NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY (name, version)
);
"""

#: Tables and indexes added after schema 1 shipped, without a version bump: created
#: (IF NOT EXISTS) when a writing store opens a file that lacks them; a reader (`mode=ro`)
#: of an old file answers the same, by reading the table instead of the index.
#: The users' project history, and the indexes of sessions by user and by pipeline type
#: (`rules.SessionFilter`), newest first.
_ADDED_DDL = {
    "user_projects": """
CREATE TABLE IF NOT EXISTS user_projects (
    user_id TEXT NOT NULL, project_id TEXT NOT NULL, v INTEGER NOT NULL,
    project_name TEXT NOT NULL, description TEXT NOT NULL, tech_stack TEXT NOT NULL,
    file_path TEXT, size_mb REAL NOT NULL, download_count INTEGER NOT NULL, last_download TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, last_accessed REAL, metadata TEXT NOT NULL,
    PRIMARY KEY (user_id, project_id)
) WITHOUT ROWID
""",
    "cache_entries": """
CREATE TABLE IF NOT EXISTS cache_entries (
    key TEXT PRIMARY KEY, agent TEXT NOT NULL, output TEXT NOT NULL, created_at REAL NOT NULL,
    expires_at REAL NOT NULL, session_id TEXT, task_id TEXT
)
""",
    "sessions_by_user": """
CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions (user_id, created_at, session_id)
    WHERE user_id IS NOT NULL
""",
    "sessions_by_type": """
CREATE INDEX IF NOT EXISTS sessions_by_type ON sessions (pipeline_type, created_at, session_id)
    WHERE pipeline_type IS NOT NULL
""",
    # flow control (`sqlite.resources`, `sqlite.schedules`): limits, holders, starts, waiters, schedules
    "resource_limits": """
CREATE TABLE IF NOT EXISTS resource_limits (
    name TEXT PRIMARY KEY, v INTEGER NOT NULL, concurrency INTEGER, rate_count INTEGER, rate_period REAL
) WITHOUT ROWID
""",
    "resource_holders": """
CREATE TABLE IF NOT EXISTS resource_holders (
    name TEXT NOT NULL, holder TEXT NOT NULL, amount INTEGER NOT NULL, lease_until REAL NOT NULL,
    PRIMARY KEY (name, holder)
) WITHOUT ROWID
""",
    "resource_starts": """
CREATE TABLE IF NOT EXISTS resource_starts (
    name TEXT NOT NULL, key TEXT NOT NULL, at REAL NOT NULL, amount INTEGER NOT NULL,
    PRIMARY KEY (name, key)
) WITHOUT ROWID
""",
    "resource_waiters": """
CREATE TABLE IF NOT EXISTS resource_waiters (
    name TEXT NOT NULL, holder TEXT NOT NULL, priority INTEGER NOT NULL, until REAL NOT NULL,
    PRIMARY KEY (name, holder)
) WITHOUT ROWID
""",
    "schedules": """
CREATE TABLE IF NOT EXISTS schedules (
    name TEXT PRIMARY KEY, v INTEGER NOT NULL, version INTEGER NOT NULL, body TEXT NOT NULL
) WITHOUT ROWID
""",
}
ADDED = frozenset(_ADDED_DDL)

#: Nullable columns added after schema 1 shipped, without a version bump: `ALTER TABLE ADD
#: COLUMN` (a change of the schema only, no row is rewritten) when a writing store opens a
#: file that lacks them; a reader (`mode=ro`) of such a file reads them as NULL
#: (`shadow_missing_columns`). Named `table.column`.
_ADDED_COLUMNS = {
    "tasks.waiting_for": "TEXT",  # the signal a WAITING task waits for
}

#: Every table the SDK needs; a file with our marker but without one of these is damaged.
TABLES = frozenset(
    {"meta", "sessions", "tasks", "edges", "staged_tasks", "signals", "events", "metrics", "pipelines"}
)


def is_busy(exc: BaseException) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED: another connection holds the lock; back off and retry."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    text = str(exc)
    return "locked" in text or "busy" in text


def _fix(path: Path) -> str:
    return (
        f"point ORCHESTRATOR_STORE (or --store) at another file, e.g. sqlite://{path.parent / 'orchestrator.db'}, "
        f"or move {path} away"
    )


def _check_header(path: Path) -> None:
    with open(path, "rb") as fh:
        head = fh.read(len(_SQLITE_HEADER))
    if head and head != _SQLITE_HEADER:
        raise SchemaError(
            f"{path} is not a SQLite database, so it is not an orchestrator store; nothing was "
            f"written to it. {_fix(path)}",
            path=str(path),
        )


def create_file(path: Path) -> None:
    """Create the database file 0600 (its directory 0700) before SQLite opens it.

    SQLite gives the `-wal` and `-shm` files the mode of the database file, so they are
    private too. An existing file is checked to be SQLite (or empty) and left as is.
    """
    if path.exists():
        if path.is_dir():
            raise SchemaError(
                f"store path {path} is a directory, not a SQLite file; name a file, e.g. {path / 'state.db'}",
                path=str(path),
            )
        _check_header(path)
        return
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreUnavailableError.cannot_create("directory", str(path.parent), exc) from exc
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:  # another process created it meanwhile: fine, it checks it too
        return
    except OSError as exc:
        raise StoreUnavailableError.cannot_create("file", str(path), exc) from exc
    os.close(fd)


def check_existing(path: Path) -> None:
    """For a reader, which never creates a store: the file exists, is a file, and is SQLite."""
    if not path.exists():
        raise StoreUnavailableError.no_file(str(path), "does not exist")
    if path.is_dir():
        raise SchemaError(
            f"store path {path} is a directory, not a SQLite file; name a file, e.g. {path / 'state.db'}",
            path=str(path),
        )
    _check_header(path)


def inspect(conn: sqlite3.Connection, path: Path) -> bool:
    """True when the file is empty (to be created); raises SchemaError if it is not ours.

    Only reads: a foreign file is refused before anything is written to it.
    """
    names = {
        row[0]
        for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
    }
    if not names:
        return True
    if "meta" not in names:
        shown = ", ".join(sorted(names)[:5])
        raise SchemaError(
            f"{path} is a SQLite database with other tables ({shown}) and no orchestrator marker: it "
            f"was not written by this SDK and was left untouched. {_fix(path)}",
            path=str(path),
        )
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    if meta.get("application") != APPLICATION:
        raise SchemaError(
            f"{path} has a meta table but not the orchestrator marker (application="
            f"{meta.get('application')!r}); it was left untouched. {_fix(path)}",
            path=str(path),
        )
    try:
        version = int(meta.get("schema_version", ""))
    except ValueError:
        raise SchemaError(
            f"{path} has an unreadable schema version {meta.get('schema_version')!r}; restore it from a "
            f"backup or {_fix(path)}",
            path=str(path),
        ) from None
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"{path} was written by a newer orchestrator (schema {version}; this code knows "
            f"{SCHEMA_VERSION}); upgrade durable-orchestrator to use it, or {_fix(path)}",
            path=str(path),
            schema_version=version,
        )
    if version < SCHEMA_VERSION:
        raise SchemaError(
            f"{path} has schema {version}, older than this code's {SCHEMA_VERSION}, and no migration "
            f"exists for it; use the SDK version that wrote it, or {_fix(path)}",
            path=str(path),
            schema_version=version,
        )
    missing = sorted(TABLES - names)
    if missing:
        raise SchemaError(
            f"{path} is an orchestrator store but lacks table(s) {', '.join(missing)}; it is damaged. "
            f"Restore it from a backup, or {_fix(path)}",
            path=str(path),
        )
    return False


def verify_or_create(conn: sqlite3.Connection, path: Path) -> None:
    """Inside the caller's write transaction: create every table if the file is empty, else verify."""
    if not inspect(conn, path):
        return
    for statement in _DDL.split(";"):
        if statement.strip():
            conn.execute(statement)
    add_missing(conn)
    conn.executemany(
        "INSERT INTO meta (key, value) VALUES (?, ?)",
        [("application", APPLICATION), ("schema_version", str(SCHEMA_VERSION))],
    )
    conn.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def missing_additions(conn: sqlite3.Connection) -> list[str]:
    """Tables and indexes of `ADDED`, then columns of `_ADDED_COLUMNS`, the file lacks (a read only)."""
    names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'index')")}
    return sorted(ADDED - names) + _missing_columns(conn)


def _missing_columns(conn: sqlite3.Connection) -> list[str]:
    def present(name: str) -> bool:
        table, column = name.split(".")
        return any(row[1] == column for row in conn.execute(f"PRAGMA main.table_info({table})"))

    return sorted(name for name in _ADDED_COLUMNS if not present(name))


def add_missing(conn: sqlite3.Connection) -> None:
    """Inside the caller's write transaction: create the added tables, indexes and columns a file lacks."""
    for name in missing_additions(conn):
        if name in _ADDED_COLUMNS:
            table, column = name.split(".")
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {_ADDED_COLUMNS[name]}")
        else:
            conn.execute(_ADDED_DDL[name])


def shadow_missing_columns(conn: sqlite3.Connection) -> None:
    """For a reader of a file that lacks added columns: a temporary view per such table, of the
    same name, that adds them as NULL. Unqualified names find the `temp` schema first, so every
    query reads the view; nothing is written to the file."""
    missing: dict[str, list[str]] = {}
    for name in _missing_columns(conn):
        table, column = name.split(".")
        missing.setdefault(table, []).append(column)
    for table, columns in missing.items():
        added = ", ".join(f"NULL AS {c}" for c in columns)
        conn.execute(f"CREATE TEMP VIEW IF NOT EXISTS {table} AS SELECT *, {added} FROM main.{table}")


def file_problems(path: Path) -> list[str]:
    """What is wrong with the file as it is on disk, each with its fix; [] when fine.

    Opens its own read-only connection, so it works before `initialize()` and never
    creates or changes the file.
    """
    if not path.exists():
        return [
            (f"store file {path} does not exist; it is created on first use (e.g. run any "
             f"`orchestrator` command, or `await store.initialize()`)")
        ]
    problems: list[str] = []
    if not os.access(path, os.R_OK | os.W_OK):
        problems.append(f"store file {path} is not readable and writable by this user; fix its owner or mode")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        problems.append(
            f"directory {path.parent} is not writable; SQLite must create {path.name}-wal next to the file"
        )
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        problems.append(f"store file {path} has mode {mode:o}, readable by others; run `chmod 600 {path}`")
    try:
        _check_header(path)
    except (SchemaError, OSError) as exc:
        return [*problems, str(exc)]
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return [*problems, f"store file {path} cannot be opened ({exc}); check its permissions"]
    try:
        try:
            inspect(conn, path)
            journal = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
            if journal != "wal":
                problems.append(
                    f"store file {path} is in journal mode {journal!r}, not WAL; open it once with the "
                    f"SDK (it switches to WAL), or run `sqlite3 {path} 'PRAGMA journal_mode=WAL'`"
                )
        except SchemaError as exc:
            problems.append(str(exc))
        except sqlite3.DatabaseError as exc:
            problems.append(f"store file {path} cannot be read ({exc}); {_fix(path)}")
    finally:
        conn.close()
    return problems


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (we issue BEGIN ourselves), never waiting on locks.

    `busy_timeout = 0`: a locked file returns SQLITE_BUSY at once and the caller backs
    off with an async sleep, so the event loop is never blocked inside SQLite.
    """
    try:
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open store file {path}: {exc}; check the path and its permissions") from exc
    conn.execute("PRAGMA busy_timeout = 0")
    return conn


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection (SQLite `mode=ro`) that never writes and never waits on locks.

    WAL needs the `-shm` file: when it is absent and the directory is not writable
    (SQLITE_READONLY_DIRECTORY), no writer has the file open, and it is read as an
    immutable snapshot instead. A writer that starts meanwhile is not seen by that
    snapshot (at worst a read fails and is reported), which a one-off read can afford.
    """
    uri = path.resolve().as_uri()
    try:
        return _probed(f"{uri}?mode=ro")
    except sqlite3.Error as exc:
        if is_busy(exc):
            raise  # the caller retries a locked file
        if getattr(exc, "sqlite_errorcode", None) != _SQLITE_READONLY_DIRECTORY:
            raise _open_error(path, exc) from exc
    try:
        return _probed(f"{uri}?immutable=1")
    except sqlite3.Error as exc:
        raise _open_error(path, exc) from exc


def _probed(uri: str) -> sqlite3.Connection:
    """Connect to `uri` and read the schema once, so an unusable file fails here (closed)."""
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA busy_timeout = 0")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except BaseException:
        conn.close()
        raise
    return conn


def _open_error(path: Path, exc: sqlite3.Error) -> StoreError:
    return StoreError(f"cannot open store file {path} read-only: {exc}; check that it and its directory are "
                      f"readable", path=str(path))


def pragmas(conn: sqlite3.Connection) -> dict[str, str]:
    """The connection's journal mode, synchronous level and busy timeout, as `doctor` shows them."""
    sync = conn.execute("PRAGMA synchronous").fetchone()[0]
    return {
        "journal_mode": str(conn.execute("PRAGMA journal_mode").fetchone()[0]).upper(),
        "synchronous": {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(sync, str(sync)),
        "busy_timeout_ms": str(conn.execute("PRAGMA busy_timeout").fetchone()[0]),
    }
