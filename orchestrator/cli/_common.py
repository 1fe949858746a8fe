"""What every command shares: global options, opening the store, exit codes, output.

Exit codes (documented in `orchestrator --help` and docs/cli.md):
0 ok; 1 a run/resume ended FAILED (or a resume in a sweep failed, or doctor found
problems); 2 usage or bad input; 3 not found; 4 conflict (claim rejected, lease held,
wrong state); 5 store unavailable or unusable; 6 a run/resume stopped WAITING for a
signal or an approval (not done, not failed: it continues once the signal is sent).
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from orchestrator.errors import (
    ConfigError,
    ConflictError,
    NotFoundError,
    OrchestratorError,
    StoreError,
    ValidationError,
)
from orchestrator.store import Store, StoreConfig, open_store

__all__ = [
    "EXIT_CONFLICT",
    "EXIT_FAILED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_STORE",
    "EXIT_USAGE",
    "EXIT_WAITING",
    "STATUS_STYLE",
    "Globals",
    "TextLogFormatter",
    "add_row",
    "console",
    "decode_cursor",
    "emit_json",
    "encode_cursor",
    "err_console",
    "exit_code_for",
    "fmt_time",
    "globals_of",
    "jsonable",
    "open_cli_store",
    "operational_error",
    "parse_json_arg",
    "run_async",
    "setup_logging",
    "status_text",
    "store_config",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 4
EXIT_STORE = 5
EXIT_WAITING = 6

T = TypeVar("T")

_interactive = sys.stdout.isatty()
# Off a terminal, a wide console keeps ids and tables on one line for grep and logs.
# Markup is off: ids, errors and reasons come from agents and users and print as written
# (as markup, `[/path]` raised MarkupError and `[error]` vanished). Style with `style=` or `Text`.
console = Console(width=None if _interactive else 200, soft_wrap=not _interactive, markup=False)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200, markup=False)

#: The style of each task and session status, wherever one is shown.
STATUS_STYLE: dict[str, str] = {
    "PENDING": "blue",
    "RUNNING": "cyan",
    "WAITING": "yellow",
    "COMPLETED": "green",
    "FAILED": "red",
    "SKIPPED": "dim",
    "CANCELLED": "magenta",
}


def status_text(status: str, extra_style: str = "") -> Text:
    """A status value in its colour (`extra_style`, e.g. "bold", added)."""
    return Text(status, style=f"{extra_style} {STATUS_STYLE.get(status, '')}".strip())


def add_row(table: Table, *cells: str | Text, **kwargs: Any) -> None:
    """`table.add_row` with every string shown as written, whichever console renders it (never markup)."""
    table.add_row(*(c if isinstance(c, Text) else Text(c) for c in cells), **kwargs)


@dataclass(frozen=True, slots=True)
class Globals:
    """The root options, shared by every command through `ctx.obj`."""

    store: str | None = None
    log_format: str = "text"
    log_level: str = "WARNING"
    verbose: bool = False


def globals_of(ctx: typer.Context) -> Globals:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, Globals) else Globals()


def setup_logging(log_format: str, log_level: str) -> None:
    """Log to stderr as text or one JSON object per line (telemetry.JsonFormatter); below
    WARNING, botocore, urllib3 and PynamoDB are filtered out (they log credentials and bodies)."""
    from orchestrator.telemetry import JsonFormatter, LibraryFilter

    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        raise ValidationError(f"--log-level {log_level!r} is not a level; use DEBUG, INFO, WARNING or ERROR")
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    elif log_format == "text":
        handler.setFormatter(TextLogFormatter(tracebacks=level <= logging.DEBUG))
    else:
        raise ValidationError(f"--log-format {log_format!r} is not supported; use text or json")
    handler.addFilter(LibraryFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def store_config(g: Globals, **dynamodb_overrides: Any) -> StoreConfig:
    """`--store`, else ORCHESTRATOR_STORE, else SQLite in the XDG state dir; DynamoDB overrides applied."""
    env = dict(os.environ)
    config = StoreConfig.from_url(g.store, env=env) if g.store else StoreConfig.from_env(env)
    overrides = {k: v for k, v in dynamodb_overrides.items() if v is not None}
    if overrides and config.dynamodb is not None:
        config = StoreConfig(dynamodb=replace(config.dynamodb, **overrides), env=env)
    return config


@asynccontextmanager
async def open_cli_store(g: Globals, *, initialize: bool = True, read_only: bool = False,
                         **overrides: Any) -> AsyncIterator[Store]:
    """The store a command works on, initialized (created if missing) unless told otherwise.

    `read_only`: for commands that only read. A SQLite file is then opened `mode=ro`:
    never created or purged, readable without write access, never waiting for a writer.
    """
    config = store_config(g, **overrides)
    if read_only and config.sqlite is not None:
        config = StoreConfig(sqlite=replace(config.sqlite, read_only=True), env=config.env)
    store = open_store(config)
    if g.verbose:
        err_console.print(f"store: {store.describe()}", highlight=False)
    try:
        if initialize:
            await store.initialize()
        yield store
    finally:
        with anyio.CancelScope(shield=True):
            await store.aclose()


def run_async(fn: Callable[[], Awaitable[T]]) -> T:
    """Run a command's coroutine on a fresh event loop (asyncio)."""
    result: T = anyio.run(fn)
    return result


def operational_error(exc: BaseException) -> OrchestratorError | None:
    """The error to print for `exc`, or None when it is not operational (a bug: keep its traceback).

    A task group (the progress display beside a run) raises an ExceptionGroup: when every
    error in it is one of ours, the first one is what went wrong; the rest followed it.
    """
    if isinstance(exc, OrchestratorError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        found = [operational_error(e) for e in exc.exceptions]
        if found and all(e is not None for e in found):
            return found[0]
    return None


class TextLogFormatter(logging.Formatter):
    """Text log lines; an operational error attached to a record is summed up on the same line.

    Its traceback is for debugging the SDK, not for operating it: shown at DEBUG only.
    Any other exception (a bug) keeps its traceback.
    """

    def __init__(self, *, tracebacks: bool) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        error = operational_error(record.exc_info[1]) if record.exc_info and record.exc_info[1] else None
        if error is None or self._tracebacks:
            return super().format(record)
        brief = logging.makeLogRecord(record.__dict__)
        brief.msg, brief.args = f"{record.getMessage()} ({type(error).__name__}: {error})", None
        brief.exc_info = brief.exc_text = None
        return super().format(brief)


def exit_code_for(exc: BaseException) -> int:
    if isinstance(exc, (ValidationError, ConfigError)):
        return EXIT_USAGE
    if isinstance(exc, NotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(exc, ConflictError):
        return EXIT_CONFLICT
    if isinstance(exc, (StoreError, ConnectionError)):
        return EXIT_STORE
    return EXIT_FAILED


def parse_json_arg(value: str | None, *, what: str) -> Any:
    """A JSON value from the command line, or `@path` to read it from a file (`@-`: stdin)."""
    if value is None:
        return None
    text = value
    if value.startswith("@"):
        path = value[1:]
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValidationError(f"{what}: cannot read {path!r}: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(
            f"{what} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); pass JSON such as "
            f"'{{\"key\": 1}}' or @file.json"
        ) from None


def jsonable(value: Any) -> Any:
    """Records (frozen dataclasses, enums, tuples, mappings) as plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
        for prop in ("percentage", "duration", "ok", "error_rate", "mean_ms", "success_rate"):
            attr = getattr(type(value), prop, None)
            if isinstance(attr, property):
                out[prop] = jsonable(getattr(value, prop))
        return out
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {(k if isinstance(k, str) else "/".join(map(str, k)) if isinstance(k, tuple) else str(k)):
                jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return None
    return value


def emit_json(value: Any) -> None:
    """Print one JSON document on stdout (no colours, no wrapping)."""
    sys.stdout.write(json.dumps(jsonable(value), indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def fmt_time(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def encode_cursor(data: Mapping[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(text: str) -> dict[str, Any]:
    try:
        padded = text + "=" * (-len(text) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()).decode())
    except (ValueError, UnicodeDecodeError):
        raise ValidationError(f"--cursor {text!r} is not a cursor printed by `orchestrator list`") from None
    if not isinstance(data, dict):
        raise ValidationError(f"--cursor {text!r} is not a cursor printed by `orchestrator list`")
    return data
