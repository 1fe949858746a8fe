"""Size limits of stored values: defined once, enforced identically by every backend.

The limits come from DynamoDB's item limit (400 KB, attribute names and values
included), the tighter of the two backends, so a session that runs on SQLite also
runs on DynamoDB. The budget of the largest item, a task:

    input 96 KiB + checkpoint 96 KiB + inline output 64 KiB (larger outputs go to
    chunk items) + attempt history (10 entries, each <= ~8.3 KiB of error) + last
    error + progress and bookkeeping (< 4 KiB)  ~=  350 KiB  <  400 KB

A session item holds its input (128 KiB) and metadata (32 KiB); a signal item its
payload (256 KiB); an event item its message and data (32 KiB). Outputs have no
limit on either backend (DynamoDB stores large ones as chunk items, adopted by the
completion that names them). Ids are at most 128 characters (`records.check_id`).
Sizes are of the codec's UTF-8 JSON, i.e. after redaction, as stored.
"""

from __future__ import annotations

import enum
from typing import Any

from orchestrator.codec import Codec
from orchestrator.errors import PayloadTooLargeError, ValidationError
from orchestrator.store.records import PipelineDefinition

__all__ = ["INLINE_OUTPUT_BYTES", "MAX_PAGE", "REASON_CHARS", "Payload", "check_definition", "check_page_limit",
           "encode", "reason"]

KIB = 1024

#: Encoded outputs up to this size stay in the task item on DynamoDB; larger ones are chunked.
INLINE_OUTPUT_BYTES = 64 * KIB
#: Reasons (why a session ended, needs-human) are cut to this many characters.
REASON_CHARS = 4000
#: The most items one page of a listing returns.
MAX_PAGE = 1000


class Payload(enum.Enum):
    """A kind of user value the store keeps, with its limit in bytes (None: no limit)."""

    SESSION_INPUT = ("input of session", 128 * KIB)
    SESSION_METADATA = ("metadata of session", 32 * KIB)
    TASK_INPUT = ("input of task", 96 * KIB)
    CHECKPOINT = ("checkpoint of task", 96 * KIB)
    OUTPUT = ("output of task", None)
    SIGNAL_PAYLOAD = ("payload of signal", 256 * KIB)
    EVENT_DATA = ("data of event", 32 * KIB)
    PROJECT_METADATA = ("metadata of project", 32 * KIB)

    @property
    def what(self) -> str:
        return str(self.value[0])

    @property
    def limit(self) -> int | None:
        limit: int | None = self.value[1]
        return limit


def encode(codec: Codec, kind: Payload, value: Any, *, session_id: str | None = None,
           task_id: str | None = None, name: str | None = None) -> str:
    """The stored text of `value` (the codec's JSON), or PayloadTooLargeError naming ids, size and limit.

    Raised before anything is written; the scheduler treats it as a non-retryable failure
    of the agent that produced the value, never as a store failure to retry.
    """
    where = _where(kind, session_id, task_id, name)
    text = codec.encode(value, where=where)
    limit = kind.limit
    if limit is not None:
        size = len(text.encode("utf-8"))
        if size > limit:
            raise PayloadTooLargeError.of(where, size, limit, session_id=session_id, task_id=task_id,
                                          payload=kind.name.lower())
    return text


def check_definition(codec: Codec, definition: PipelineDefinition) -> None:
    """Each static task input of a pipeline definition within the task-input limit, checked
    before the definition is stored (the session's creation checks the same inputs again)."""
    for t in definition.tasks:
        encode(codec, Payload.TASK_INPUT, t.input, task_id=t.task_id)


def check_page_limit(limit: int) -> None:
    """A page holds 1..MAX_PAGE items; more are read with the cursor."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise ValidationError.bad_value("limit", limit, f"1..{MAX_PAGE}, and page with the cursor", "a listing")


def reason(text: str | None) -> str | None:
    """A reason as stored: at most REASON_CHARS characters (the rest is cut, marked by '...')."""
    if text is None or len(text) <= REASON_CHARS:
        return text
    return text[: REASON_CHARS - 3] + "..."


def _where(kind: Payload, session_id: str | None, task_id: str | None, name: str | None) -> str:
    parts = [kind.what]
    if name is not None:
        parts.append(repr(name))
    if task_id is not None and kind not in (Payload.SESSION_INPUT, Payload.SESSION_METADATA):
        parts.append(task_id if kind.what.endswith("task") else f"for task {task_id}")
    if session_id is not None:
        parts.append(session_id if kind.what.endswith("session") else f"in session {session_id}")
    return " ".join(parts)
