"""Every exception the SDK raises, classified by what the engine does next.

    OrchestratorError
    ├── ConfigError (ValueError)           bad store URL, bad environment, bad option
    ├── ValidationError (ValueError)       bad input, caught before anything is written
    │   ├── PipelineDefinitionError        unknown dependency, duplicate id, unknown agent
    │   │   └── CycleError                 the dependency graph has a cycle (named)
    │   ├── SerializationError             a value the JSON codec cannot encode
    │   ├── PayloadTooLargeError           a value over its size limit (store/rules/limits.py)
    │   └── VersionMismatchError           stored pipeline version differs from the code's
    ├── NotFoundError (LookupError)
    │   ├── SessionNotFoundError
    │   ├── TaskNotFoundError
    │   ├── PipelineNotFoundError
    │   ├── UserProjectNotFoundError       no such project in the user's project history
    │   ├── ResourceNotFoundError          no limits set for this resource name
    │   └── ScheduleNotFoundError          no schedule of this name
    ├── StoreError                         the store failed, after its own retries
    │   ├── StoreUnavailableError (ConnectionError)   unreachable, throttled too long
    │   ├── StoreDeadlineError (TimeoutError)         the caller's deadline came before another attempt
    │   └── SchemaError                    wrong table schema, foreign or newer item
    ├── ConflictError                      a conditional write was rejected
    │   ├── ClaimRejectedError             the session is not claimable now
    │   │   └── RedriveLimitError          a FAILED session used its redrives, or needs a person
    │   ├── LeaseLostError                 a newer owner holds the session (fence moved)
    │   ├── TaskCompletedError             the task was already completed
    │   ├── SessionStateError              the session is not in a state that allows it
    │   └── ScheduleExistsError            a schedule of this name exists already

The agent-facing exceptions (`NonRetryableError`, `SignalTimeoutError`, ...) are
defined in `orchestrator.agents.errors` and re-exported here. This module imports only the stdlib
and `orchestrator.agents.errors`, so every layer may import it.

Every error keeps the ids it names as attributes and pickles cleanly (process agents
and worker pools send them across processes). A condition raised from more than one
place has one constructor here (a classmethod), which renders its message from the ids:
what was wrong, where, and the next action.
"""

from __future__ import annotations

from typing import Any

from orchestrator.agents.errors import (
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
    "PayloadTooLargeError",
    "PipelineDefinitionError",
    "PipelineNotFoundError",
    "RedriveLimitError",
    "ResourceNotFoundError",
    "ScheduleExistsError",
    "ScheduleNotFoundError",
    "SchemaError",
    "SerializationError",
    "SessionNotFoundError",
    "SessionStateError",
    "SignalTimeoutError",
    "StoreDeadlineError",
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

    @classmethod
    def bad_setting(cls, source: str, name: str, value: Any, expected: str) -> ConfigError:
        """`name` in `source` (a URL, a variable, a constructor) is out of its domain: say what is accepted."""
        return cls(f"{source}: {name}={value!r} is not valid; use {expected}", setting=name, value=value)

    @classmethod
    def app_import_failed(cls, spec: str, module: str, exc: BaseException) -> ConfigError:
        """Importing the module of `--app` raised: name the error and where it was raised."""
        where = ""
        if isinstance(exc, SyntaxError) and exc.filename:
            where = f" at {exc.filename}:{exc.lineno}"
        elif exc.__traceback__ is not None:
            tb = exc.__traceback__
            while tb.tb_next is not None:
                tb = tb.tb_next
            where = f" at {tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"
        return cls(
            f"app {spec!r}: importing module {module!r} raised {type(exc).__name__}: {exc}{where}; fix the module "
            f"(`python -c 'import {module}'` shows the traceback)",
            app=spec, module=module,
        )

    @classmethod
    def app_factory_failed(cls, spec: str, exc: BaseException) -> ConfigError:
        """The zero-argument factory `--app` names raised instead of returning a Pipeline."""
        return cls(
            f"app {spec!r}: calling the factory raised {type(exc).__name__}: {exc}; fix the factory, or point "
            f"at a Pipeline",
            app=spec,
        )


class ValidationError(OrchestratorError, ValueError):
    """Input rejected before anything was written."""

    @classmethod
    def bad_value(cls, name: str, value: Any, expected: str, where: str, **ids: Any) -> ValidationError:
        """`name` has a value outside its domain: say which, where, and what is accepted."""
        return cls(f"{name}={value!r} for {where} is not valid; pass {expected}", field=name, **ids)


class PipelineDefinitionError(ValidationError):
    """A pipeline (or tasks added at run time) is not a valid DAG of known agents."""

    @classmethod
    def duplicate_task(cls, where: str, task_id: str, **ids: Any) -> PipelineDefinitionError:
        return cls(f"{where} has two tasks with id {task_id!r}; task ids must be unique", task_id=task_id, **ids)

    @classmethod
    def unknown_dependency(
        cls, where: str, task_id: str, dependency: str, hint: str = "", **ids: Any
    ) -> PipelineDefinitionError:
        return cls(
            f"task {task_id!r} in {where} depends on unknown task {dependency!r}{hint}; add a task "
            f"{dependency!r} (in the same call, or before) or fix the dependency",
            task_id=task_id, missing=dependency, **ids,
        )

    @classmethod
    def redefined_task(cls, session_id: str, task_id: str) -> PipelineDefinitionError:
        return cls(
            f"task {task_id!r} already exists in session {session_id} with another definition; a re-run "
            f"agent must add the same tasks (deterministic ids), or use a new id",
            session_id=session_id, task_id=task_id,
        )


class CycleError(PipelineDefinitionError):
    """The dependency graph has a cycle; `cycle` lists the task ids around it."""

    cycle: list[str]

    @classmethod
    def among(cls, where: str, cycle: list[str], **ids: Any) -> CycleError:
        """`cycle` starts at its smallest id, so the message is the same on every run."""
        path = " -> ".join([*cycle, cycle[0]])
        return cls(
            f"{where} has a cycle: {path} (each task depends on the next); remove one of these dependencies",
            cycle=cycle, **ids,
        )


class SerializationError(ValidationError):
    """A value cannot be encoded as JSON; `path` points at it (e.g. `input.files[2]`)."""

    path: str


class PayloadTooLargeError(ValidationError):
    """A value is larger than its limit on every backend; `size` and `limit` are in bytes."""

    size: int
    limit: int

    @classmethod
    def of(cls, what: str, size: int, limit: int, **ids: Any) -> PayloadTooLargeError:
        return cls(
            f"{what} is {size:,} bytes, over the limit of {limit:,} bytes (the same on every store); "
            f"keep large data elsewhere (a file, an object store) and pass a reference to it",
            size=size, limit=limit, **ids,
        )


class VersionMismatchError(ValidationError):
    """The session was started by another version of the pipeline than the code's."""

    @classmethod
    def reshaped(cls, pipeline: str, version: str, stored_digest: str, digest: str) -> VersionMismatchError:
        """A pipeline version is stored with other tasks or dependencies than the code's."""
        return cls(
            f"pipeline {pipeline} version {version} is already stored with another shape (digest "
            f"{stored_digest}, this one {digest}); bump the pipeline's version when you change its tasks",
            pipeline=pipeline, version=version, stored_digest=stored_digest, digest=digest,
        )


class NotFoundError(OrchestratorError, LookupError):
    """Something named by id does not exist in the store."""


class SessionNotFoundError(NotFoundError):
    """No session with this id in the store."""

    @classmethod
    def missing(cls, session_id: str, store: str) -> SessionNotFoundError:
        return cls(
            f"session {session_id!r} not found in {store}; list sessions with `orchestrator list`, or check "
            f"that ORCHESTRATOR_STORE names the store that holds it",
            session_id=session_id, store=store,
        )


class TaskNotFoundError(NotFoundError):
    """No task with this id in the session."""

    @classmethod
    def missing(cls, session_id: str, task_id: str, store: str) -> TaskNotFoundError:
        return cls(
            f"session {session_id} has no task {task_id!r} in {store}; see its tasks with "
            f"`orchestrator status {session_id}`",
            session_id=session_id, task_id=task_id, store=store,
        )


class PipelineNotFoundError(NotFoundError):
    """No stored definition for this pipeline name and version."""

    @classmethod
    def missing(cls, pipeline: str, version: str, store: str) -> PipelineNotFoundError:
        return cls(
            f"pipeline {pipeline} version {version} is not stored in {store}; it is stored when a session of it "
            f"is first run (or with put_pipeline)",
            pipeline=pipeline, version=version,
        )


class UserProjectNotFoundError(NotFoundError):
    """No project with this id in the user's project history; `user_id`, `project_id` name it."""


class ResourceNotFoundError(NotFoundError):
    """No limits are set for this resource name (it is unlimited)."""

    @classmethod
    def missing(cls, name: str, store: str) -> ResourceNotFoundError:
        return cls(f"resource {name!r} has no limits in {store}; set them with `orchestrator limits set {name} "
                   f"--concurrency N --rate N/min`, or list resources with `orchestrator limits list`",
                   resource=name, store=store)


class ScheduleNotFoundError(NotFoundError):
    """No schedule of this name in the store."""

    @classmethod
    def missing(cls, name: str, store: str) -> ScheduleNotFoundError:
        return cls(f"schedule {name!r} not found in {store}; list schedules with `orchestrator schedule list`",
                   schedule=name, store=store)


class StoreError(OrchestratorError):
    """The store failed to serve a request after its own retries."""

    @classmethod
    def read_only(cls, store: str, op: str) -> StoreError:
        """A write on a store opened read-only (`?mode=ro`, as the CLI's reading commands open it)."""
        return cls(
            f"the store {store} was opened read-only, so {op} (a write) is refused; open it without "
            f"?mode=ro to change it",
            store=store, op=op,
        )


class StoreUnavailableError(StoreError, ConnectionError):
    """The store could not be reached, or kept throttling, within the retry budget."""

    @classmethod
    def no_file(cls, path: str, state: str) -> StoreUnavailableError:
        """A reader found no store at `path` (`state`: "does not exist", "is empty"); readers never create one."""
        return cls(
            f"store file {path} {state}: nothing has been recorded there yet. Check --store or "
            f"ORCHESTRATOR_STORE, or create the store with `orchestrator init`",
            path=path,
        )

    @classmethod
    def cannot_create(cls, what: str, path: str, exc: OSError) -> StoreUnavailableError:
        """The store's directory or file could not be created (`what`: "directory", "file")."""
        return cls(
            f"cannot create the store {what} {path}: {exc.strerror or exc}; choose a writable location with "
            f"--store sqlite:///PATH (or ORCHESTRATOR_STORE), or create it with the right owner and mode",
            path=path,
        )


class StoreDeadlineError(StoreError, TimeoutError):
    """A store call stopped at its caller's deadline (a lease's local deadline): no attempt is
    sent at or after it, and no backoff sleeps past it. `deadline` is on the store clock's
    `monotonic()`; `attempts` were sent before it (0: none)."""

    deadline: float
    attempts: int

    @classmethod
    def reached(cls, op: str, deadline: float, now: float, attempts: int, last: BaseException | None,
                where: str, **ids: Any) -> StoreDeadlineError:
        """`where` is the store's `[table=…, op=…, session=…, task=…]` context."""
        tried = f"after {attempts} attempt(s) (last: {last})" if attempts else "before any attempt"
        return cls(
            f"{op} was stopped at the caller's deadline (monotonic {deadline:.3f} s on the store's clock, now "
            f"{now:.3f} s) {tried}; nothing more is sent for it. If the deadline was a lease's, stop writing: "
            f"another worker resumes the session once the lease expires {where}",
            op=op, deadline=deadline, attempts=attempts, **ids,
        )


class SchemaError(StoreError):
    """The table or an item is not what this SDK wrote (or was written by a newer one)."""

    @classmethod
    def newer(cls, what: str, version: int, known: int, **ids: Any) -> SchemaError:
        """`what` (an item or row, with where it is) has a schema version this code does not know."""
        return cls(
            f"{what} has schema version {version}, newer than this SDK's {known}: it was written by a newer "
            f"durable-orchestrator. Upgrade this process (pip install -U durable-orchestrator) to read it",
            schema_version=version, **ids,
        )


class ConflictError(OrchestratorError):
    """A conditional write was rejected; the fence logic decides what happens next."""


class ClaimRejectedError(ConflictError):
    """The session is not claimable now (owned, finished, not due, or flagged)."""

    @classmethod
    def because(cls, reason: str, *, session_id: str, owner: str | None, fence: int, status: str,
                expires_at: float | None) -> ClaimRejectedError:
        """`reason` is the rulebook's sentence (it names the session and the next action)."""
        return cls(reason, session_id=session_id, owner=owner, fence=fence, status=status, expires_at=expires_at)


class LeaseLostError(ConflictError):
    """Another worker claimed the session: stop the agents and write nothing more."""

    @classmethod
    def claimed_by(cls, session_id: str, owner: str | None, fence: int, our_fence: int) -> LeaseLostError:
        return cls(
            f"session {session_id} was claimed by {owner or 'another worker'} (fence {fence}, ours {our_fence}); "
            f"our agents are stopped and our writes discarded",
            session_id=session_id, fence=fence, our_fence=our_fence, owner=owner,
        )

    @classmethod
    def not_held(cls, session_id: str, status: str, our_owner: str, fence: int) -> LeaseLostError:
        return cls(
            f"session {session_id} is {status} and no longer held by {our_owner} (fence {fence}); claim it "
            f"again to continue",
            session_id=session_id, fence=fence, our_fence=fence, owner=None,
        )

    @classmethod
    def write_rejected(cls, session_id: str, task_id: str, write: str, fence: int | None,
                       our_fence: int) -> LeaseLostError:
        """A fenced task write was refused because another writer changed the task."""
        return cls(
            f"session {session_id}: {write} of task {task_id} was rejected because another writer changed it "
            f"(fence {'?' if fence is None else fence}, ours {our_fence}); stopping",
            session_id=session_id, task_id=task_id, fence=fence, our_fence=our_fence,
        )

    @classmethod
    def deadline_passed(cls, session_id: str, owner: str, fence: int, deadline: str) -> LeaseLostError:
        return cls(
            f"session {session_id}: the lease of {owner} (fence {fence}) could not be renewed before its local "
            f"deadline {deadline}; agents stopped, nothing more is written. Another worker may resume it after "
            f"the lease expires",
            session_id=session_id, fence=fence, our_fence=fence,
        )


class TaskCompletedError(ConflictError):
    """The task is already COMPLETED; a second completion is discarded."""

    @classmethod
    def adding_to(cls, session_id: str, parent: str) -> TaskCompletedError:
        return cls(
            f"task {parent} of session {session_id} is already COMPLETED, so tasks it adds now would never be "
            f"adopted; add tasks from the agent before it returns (ctx.add_task)",
            session_id=session_id, task_id=parent,
        )


class SessionStateError(ConflictError):
    """The session's status does not allow this operation."""

    @classmethod
    def exists(cls, session_id: str, store: str) -> SessionStateError:
        return cls(
            f"session {session_id} already exists in {store}; choose another id, or continue it with "
            f"`orchestrator resume {session_id} --app APP:PIPELINE`",
            session_id=session_id,
        )

    @classmethod
    def not_allowed(cls, session_id: str, status: str, action: str, next_step: str, **ids: Any) -> SessionStateError:
        """`action` is refused in `status`; `next_step` says what to do instead."""
        return cls(f"session {session_id} is {status}: {action} is refused; {next_step}",
                   session_id=session_id, status=status, **ids)

    @classmethod
    def signal_unread(cls, session_id: str, task_id: str, what: str, status: str) -> SessionStateError:
        """A signal nothing will ever read (`what`, the task or its session, is `status` for good)."""
        return cls(
            f"{what} is {status}: nothing will ever read a signal sent to task {task_id}, so none was sent; "
            f"signal a task that has not completed (see `orchestrator status {session_id}`)",
            session_id=session_id, task_id=task_id, status=status,
        )

    @classmethod
    def kept_changing(cls, session_id: str, action: str, attempts: int) -> SessionStateError:
        return cls(
            f"session {session_id} changed under each of {attempts} attempts to {action} (other writers are "
            f"busy with it); retry",
            session_id=session_id,
        )


class ScheduleExistsError(ConflictError):
    """A schedule of this name exists already."""

    @classmethod
    def exists(cls, name: str, store: str) -> ScheduleExistsError:
        return cls(f"schedule {name!r} already exists in {store}; delete it first (`orchestrator schedule delete "
                   f"{name}`) or choose another name", schedule=name, store=store)


class RedriveLimitError(ClaimRejectedError):
    """A FAILED session used all its redrives or is flagged needs-human: only a person's
    forced resume (`orchestrator resume SESSION --app APP:PIPELINE --force`) takes it again."""
