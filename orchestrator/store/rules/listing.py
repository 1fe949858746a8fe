"""Listing sessions by user or by pipeline type: which index, what matches, the order and the cursor.

Decisions (both backends call these; `contract_listing.py` proves them):

- A filter names a user, a pipeline type, or both, and optionally one status. The user
  index serves any filter with a user (a user's sessions are far fewer than a type's);
  the type index serves the rest. The other fields are checked on each session read.
- Newest first: `created_at` descending, ties by session id descending. Creation time
  never changes, so a session never moves between pages while it runs.
- A page holds at most `limit` sessions (`check_page_limit`) and may hold fewer, even
  none, while a cursor says more may follow: a filter field the index does not hold is
  checked after the read. Only `cursor=None` ends a listing.
- The cursor is the position of the last session examined plus the filter it belongs
  to; a cursor of another filter, or one this SDK did not make, is a ValidationError.
"""

from __future__ import annotations

import base64
import enum
import json
from dataclasses import dataclass

from orchestrator.errors import ValidationError
from orchestrator.store.records import SessionRecord, SessionStatus
from orchestrator.store.records.base import LABEL_CHARS

__all__ = ["Position", "SessionFilter", "SessionIndex", "position_of"]

#: Where a page continues: strictly older than (created_at, session_id).
Position = tuple[float, str]


class SessionIndex(enum.Enum):
    """The index a filtered listing reads."""

    USER = "user"
    TYPE = "type"


def _label(name: str, value: object) -> None:
    if not isinstance(value, str) or not 1 <= len(value) <= LABEL_CHARS:
        raise ValidationError.bad_value(name, value, f"a string of 1..{LABEL_CHARS} characters",
                                        "a listing of sessions by user or pipeline type")


@dataclass(frozen=True, slots=True)
class SessionFilter:
    """What `find_sessions` lists; checked when built, before any read."""

    user_id: str | None = None
    pipeline_type: str | None = None
    status: SessionStatus | None = None

    def __post_init__(self) -> None:
        if self.user_id is None and self.pipeline_type is None:
            raise ValidationError(
                "a listing of sessions by user or pipeline type needs user_id or pipeline_type (or both); "
                "to list by status alone use list_sessions(status), which reads the status index",
                field="user_id")
        if self.user_id is not None:
            _label("user_id", self.user_id)
        if self.pipeline_type is not None:
            _label("pipeline_type", self.pipeline_type)
        if self.status is not None:
            try:
                object.__setattr__(self, "status", SessionStatus(self.status))
            except ValueError:
                raise ValidationError.bad_value(
                    "status", self.status, f"one of {', '.join(s.value for s in SessionStatus)}",
                    "a listing of sessions by user or pipeline type") from None

    @property
    def index(self) -> SessionIndex:
        return SessionIndex.USER if self.user_id is not None else SessionIndex.TYPE

    @property
    def key(self) -> str:
        """The value the index is read at (the user id, or the pipeline type)."""
        key = self.user_id if self.index is SessionIndex.USER else self.pipeline_type
        assert key is not None
        return key

    def matches(self, session: SessionRecord) -> bool:
        return ((self.user_id is None or session.user_id == self.user_id)
                and (self.pipeline_type is None or session.pipeline_type == self.pipeline_type)
                and (self.status is None or session.status is self.status))

    def _fields(self) -> list[str | None]:
        return [self.user_id, self.pipeline_type, None if self.status is None else self.status.value]

    def cursor(self, position: Position) -> str:
        """The cursor of a page whose last examined session is at `position`."""
        text = json.dumps([position[0], position[1], self._fields()], separators=(",", ":"))
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    def position(self, cursor: str | None) -> Position | None:
        """Where the page of `cursor` starts (None: the newest session); refuses another filter's cursor."""
        if cursor is None:
            return None
        try:
            at, sid, fields = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
            position = (float(at), str(sid))
        except (ValueError, TypeError):
            raise ValidationError.bad_value(
                "cursor", cursor, "the cursor of the previous page unchanged (or none for the first)",
                "a listing of sessions by user or pipeline type") from None
        if fields != self._fields():
            raise ValidationError(
                f"cursor {cursor[:40]!r} belongs to another listing (user, type, status = {fields}); pass it "
                f"with the filter it was returned for, or start without a cursor", field="cursor")
        return position


def position_of(session: SessionRecord) -> Position:
    return session.created_at, session.session_id
