"""Every exception the SDK raises, classified by what the engine does next.

    OrchestratorError
    ├── ConfigError (ValueError)           bad store URL, bad environment, bad option
    ├── ValidationError (ValueError)       bad input, caught before anything is written
    │   ├── PipelineDefinitionError        unknown dependency, duplicate id, unknown agent
    │   │   └── CycleError                 the dependency graph has a cycle (named)
    │   ├── SerializationError             a value the JSON codec cannot encode
    │   └── VersionMismatchError           stored pipeline version differs from the code's
    ├── NotFoundError (LookupError)
    │   ├── SessionNotFoundError
    │   ├── TaskNotFoundError
    │   ├── PipelineNotFoundError
    │   └── UserProjectNotFoundError       no such project in the user's project history
    ├── StoreError                         the store failed, after its own retries
    │   ├── StoreUnavailableError (ConnectionError)   unreachable, throttled too long
    │   └── SchemaError                    wrong table schema, foreign or newer item
    ├── ConflictError                      a conditional write was rejected
    │   ├── ClaimRejectedError             the session is not claimable now
    │   ├── LeaseLostError                 a newer owner holds the session (fence moved)
    │   ├── TaskCompletedError             the task was already completed
    │   └── SessionStateError              the session is not in a state that allows it
    ├── RedriveLimitError                  a failed session used up its redrives
    └── SessionCancelledError              a stored cancel request stopped the run

The agent-facing exceptions (`NonRetryableError`, `SignalTimeoutError`, ...) are
defined in `agents.errors` and re-exported here. This module imports only the stdlib
and `agents.errors`, so every layer may import it.

Every error keeps the ids it names as attributes and pickles cleanly (process agents
and worker pools send them across processes).
"""

from __future__ import annotations

from typing import Any

from agents.errors import (
    AgentError,
    AgentTimeoutError,
    CommandFailedError,
    NonRetryableError,
    SignalTimeoutError,
)

__all__ = [
    "AgentError",
    "AgentTimeoutError",
    "ClaimRejectedError",
    "CommandFailedError",
    "ConfigError",
    "ConflictError",
    "CycleError",
    "LeaseLostError",
    "NonRetryableError",
    "NotFoundError",
    "OrchestratorError",
    "PipelineDefinitionError",
    "PipelineNotFoundError",
    "RedriveLimitError",
    "SchemaError",
    "SerializationError",
    "SessionCancelledError",
    "SessionNotFoundError",
    "SessionStateError",
    "SignalTimeoutError",
    "StoreError",
    "StoreUnavailableError",
    "TaskCompletedError",
    "TaskNotFoundError",
    "UserProjectNotFoundError",
    "ValidationError",
    "VersionMismatchError",
]


def _restore(cls: type[OrchestratorError], args: tuple[Any, ...], state: dict[str, Any]) -> OrchestratorError:
    err = cls.__new__(cls)
    err.args = args
    err.__dict__.update(state)
    return err


class OrchestratorError(Exception):
    """Base class: `message` says what, where and the next action; `context` holds ids.

    Keyword arguments become attributes (`err.session_id`, `err.task_id`, ...), so
    callers can branch on them without parsing the message.
    """

    session_id: str | None
    task_id: str | None

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.session_id = context.pop("session_id", None)
        self.task_id = context.pop("task_id", None)
        self.context = context
        for key, value in context.items():
            setattr(self, key, value)

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore, (type(self), self.args, dict(self.__dict__)))


class ConfigError(OrchestratorError, ValueError):
    """A store URL, environment variable or option is invalid."""


class ValidationError(OrchestratorError, ValueError):
    """Input rejected before anything was written."""


class PipelineDefinitionError(ValidationError):
    """A pipeline (or tasks added at run time) is not a valid DAG of known agents."""


class CycleError(PipelineDefinitionError):
    """The dependency graph has a cycle; `cycle` lists the task ids around it."""

    cycle: list[str]


class SerializationError(ValidationError):
    """A value cannot be encoded as JSON; `path` points at it (e.g. `input.files[2]`)."""

    path: str


class VersionMismatchError(ValidationError):
    """The session was started by another version of the pipeline than the code's."""


class NotFoundError(OrchestratorError, LookupError):
    """Something named by id does not exist in the store."""


class SessionNotFoundError(NotFoundError):
    """No session with this id in the store."""


class TaskNotFoundError(NotFoundError):
    """No task with this id in the session."""


class PipelineNotFoundError(NotFoundError):
    """No stored definition for this pipeline name and version."""


class UserProjectNotFoundError(NotFoundError):
    """No project with this id in the user's project history; `user_id`, `project_id` name it."""


class StoreError(OrchestratorError):
    """The store failed to serve a request after its own retries."""


class StoreUnavailableError(StoreError, ConnectionError):
    """The store could not be reached, or kept throttling, within the retry budget."""


class SchemaError(StoreError):
    """The table or an item is not what this SDK wrote (or was written by a newer one)."""


class ConflictError(OrchestratorError):
    """A conditional write was rejected; the fence logic decides what happens next."""


class ClaimRejectedError(ConflictError):
    """The session is not claimable now (owned, finished, not due, or flagged)."""


class LeaseLostError(ConflictError):
    """Another worker claimed the session: stop the agents and write nothing more."""


class TaskCompletedError(ConflictError):
    """The task is already COMPLETED; a second completion is discarded."""


class SessionStateError(ConflictError):
    """The session's status does not allow this operation."""


class RedriveLimitError(OrchestratorError):
    """A failed session used all its redrives and is flagged for a person to look at."""


class SessionCancelledError(OrchestratorError):
    """A stored cancel request stopped the session."""
