"""`StateAPI`: dict-shaped calls (`save_pipeline_session`,
`update_agent_execution`, `record_metric`) on top of `SessionRecorder`s it keeps in
memory, so session tokens never leave the process; and `save_user_project` /
`record_download` on the store's user-project history, which needs no session.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from orchestrator.clock import Clock
from orchestrator.errors import (
    SessionNotFoundError,
    SessionStateError,
    UserProjectNotFoundError,
    ValidationError,
)
from orchestrator.metrics import MetricsRecorder
from orchestrator.state.recorder import SessionRecorder
from orchestrator.store.protocol import Store
from orchestrator.store.records import (
    MetricSample,
    Progress,
    SessionStatus,
    TaskStatus,
    UserProjectRecord,
    check_id,
)

__all__ = ["StateAPI", "UserProject"]

_SESSION_STATUSES = {
    "ACTIVE": None,
    "COMPLETED": SessionStatus.COMPLETED,
    "FAILED": SessionStatus.FAILED,
    "ABANDONED": SessionStatus.CANCELLED,
}
_SESSION_KEYS = frozenset({
    "session_id", "status", "current_agent", "progress", "progress_total", "pipeline", "pipeline_type",
    "project_id", "project_name", "user_id", "metadata", "agents", "input", "reason", "error_message",
    "created_at", "last_updated",
})
_EXECUTION_STATUSES = frozenset({"PENDING", "RUNNING", "COMPLETED", "FAILED"})
_EXECUTION_KEYS = frozenset({
    "execution_id", "agent_name", "project_id", "session_id", "status", "input_data", "output_data",
    "error_message", "start_time", "end_time", "retry_count",
})
_METRIC_KEYS = frozenset({"metric_name", "agent_name", "value", "timestamp", "unit", "error"})
_USER_PROJECT_KEYS = frozenset({
    "user_id", "project_id", "project_name", "description", "tech_stack", "download_count",
    "last_accessed", "file_path", "size_mb", "session_id", "metadata",
})

#: The dict API's name for a stored user project (`UserProjectRecord`).
UserProject = UserProjectRecord


class StateAPI:
    """Dict-shaped calls, backed by `SessionRecorder`s kept in this object.

    Tokens of sessions started here stay in memory; a session started elsewhere is
    continued with `attach(session_id, token)`. `agents` is the default task list of
    sessions `save_pipeline_session` creates (the 0..9 progress counts them).
    """

    def __init__(
        self,
        store: Store,
        *,
        pipeline: str = "pipeline",
        agents: Sequence[str] = (),
        clock: Clock | None = None,
        metrics: MetricsRecorder | None = None,
    ) -> None:
        self.store = store
        self.pipeline = pipeline
        self.agents = tuple(agents)
        self.clock = clock or store.clock
        self.metrics = metrics or MetricsRecorder(store, clock=self.clock)
        self._recorders: dict[str, SessionRecorder] = {}

    def recorder(self, session_id: str) -> SessionRecorder:
        """The recorder of a session started or attached here."""
        try:
            return self._recorders[session_id]
        except KeyError:
            raise SessionStateError(
                f"session {session_id} was not started or attached by this StateAPI; call "
                f"`await api.attach({session_id!r}, token)` with the token it was started under",
                session_id=session_id,
            ) from None

    async def start(self, session_id: str | None = None, **kwargs: Any) -> SessionRecorder:
        """`SessionRecorder.start` sharing this API's metrics; the recorder is kept here."""
        kwargs.setdefault("pipeline", self.pipeline)
        kwargs.setdefault("clock", self.clock)
        rec = await SessionRecorder.start(self.store, session_id, metrics=self.metrics, **kwargs)
        self._recorders[rec.session_id] = rec
        return rec

    async def attach(self, session_id: str, token: str) -> SessionRecorder:
        rec = await SessionRecorder.attach(self.store, session_id, token, clock=self.clock, metrics=self.metrics)
        self._recorders[session_id] = rec
        return rec

    async def flush(self) -> None:
        """Write buffered metrics (call before the process exits)."""
        await self.metrics.flush()

    async def aclose(self) -> None:
        await self.flush()

    async def save_pipeline_session(self, data: Mapping[str, Any]) -> SessionRecorder:
        """Create or update a session from a dict (status ACTIVE/COMPLETED/FAILED/ABANDONED).

        The first call for a session id creates it (with `agents` as its tasks, and
        `project_id` defaulting to the session id by convention); later calls update
        progress (0..number of agents), current agent and metadata, and a final status
        ends it. `created_at`/`last_updated` are accepted and ignored: the store stamps
        its own times.
        """
        _check_keys(data, _SESSION_KEYS, "save_pipeline_session")
        sid = _required_str(data, "session_id", "save_pipeline_session")
        raw_status = str(data.get("status", "ACTIVE")).upper()
        if raw_status not in _SESSION_STATUSES:
            raise ValidationError(
                f"save_pipeline_session: status {data.get('status')!r} of session {sid} is unknown; use "
                f"one of {', '.join(_SESSION_STATUSES)}",
                session_id=sid,
                field="status",
            )
        final = _SESSION_STATUSES[raw_status]
        metadata = _json_field(data, "metadata", sid, "save_pipeline_session")
        if metadata is not None and not isinstance(metadata, dict):
            raise ValidationError(
                f"save_pipeline_session: metadata of session {sid} must be a JSON object, got "
                f"{type(metadata).__name__}",
                session_id=sid,
                field="metadata",
            )
        extra_meta: dict[str, Any] = dict(metadata or {})
        if data.get("project_name") is not None:
            extra_meta["project_name"] = str(data["project_name"])
        agents = data.get("agents")
        if agents is not None and (
            not isinstance(agents, (list, tuple)) or not all(isinstance(a, str) for a in agents)
        ):
            raise ValidationError(
                f"save_pipeline_session: agents of session {sid} must be a list of agent names",
                session_id=sid,
                field="agents",
            )
        current_agent = data.get("current_agent")
        if current_agent is not None and not isinstance(current_agent, str):
            raise ValidationError(
                f"save_pipeline_session: current_agent of session {sid} must be a string",
                session_id=sid, field="current_agent",
            )
        n_tasks = len(agents) if agents is not None else (
            len(self._recorders[sid].task_ids) if sid in self._recorders else len(self.agents)
        )
        progress = _progress_field(data, sid, n_tasks)

        rec = self._recorders.get(sid)
        if rec is None:
            try:
                await self.store.get_session(sid)
            except SessionNotFoundError:
                pass
            else:
                raise SessionStateError(
                    f"save_pipeline_session: session {sid} exists but was not started by this StateAPI; "
                    f"call `await api.attach({sid!r}, token)` first (or use a new session id)",
                    session_id=sid,
                )
            rec = await self.start(
                sid,
                pipeline=str(data.get("pipeline") or self.pipeline),
                tasks=list(agents) if agents is not None else list(self.agents),
                project_id=data.get("project_id") or sid,
                user_id=data.get("user_id"),
                pipeline_type=data.get("pipeline_type"),
                input=data.get("input"),
                metadata=extra_meta,
            )
            extra_meta = {}
        await rec.update(
            progress=progress,
            current_agents=[current_agent] if current_agent else None,
            metadata=extra_meta or None,
        )
        if final is not None:
            reason = data.get("reason") or data.get("error_message")
            await rec.finish(final, None if reason is None else str(reason))
            await self.metrics.flush()
        return rec

    async def update_agent_execution(self, data: Mapping[str, Any]) -> None:
        """Record an agent execution from a dict (`execution_id` = "<session>-<agent>").

        PENDING checks the task exists; RUNNING starts it (recording `input_data`);
        COMPLETED stores `output_data` (JSON text or a value); FAILED stores
        `error_message`. `start_time`/`end_time`/`retry_count` are kept by the store.
        """
        _check_keys(data, _EXECUTION_KEYS, "update_agent_execution")
        rec, agent = self._resolve_execution(data)
        status = str(data.get("status", "")).upper()
        if status not in _EXECUTION_STATUSES:
            raise ValidationError(
                f"update_agent_execution: status {data.get('status')!r} of task {agent!r} in session "
                f"{rec.session_id} is unknown; use one of {', '.join(sorted(_EXECUTION_STATUSES))}",
                session_id=rec.session_id,
                task_id=agent,
                field="status",
            )
        current = rec.task_status(agent)
        if status == "PENDING":
            if current is not TaskStatus.PENDING:
                raise SessionStateError(
                    f"update_agent_execution: task {agent!r} of session {rec.session_id} is "
                    f"{current.value}; it cannot go back to PENDING",
                    session_id=rec.session_id,
                    task_id=agent,
                )
        elif status == "RUNNING":
            await rec.task_started(agent, input=_json_field(data, "input_data", rec.session_id, "update_agent_execution"))
        elif status == "COMPLETED":
            output = _json_field(data, "output_data", rec.session_id, "update_agent_execution")
            await rec.task_completed(agent, output)
        else:
            await rec.task_failed(agent, str(data.get("error_message") or "failed (no error_message given)"))

    async def record_metric(self, data: Mapping[str, Any]) -> None:
        """Add a metric sample from a dict (buffered; written by `flush()`).

        `value` is summed; with `unit` "s" or "ms" it is a duration (so p50/p95 can be
        read). `timestamp` is a datetime (naive = local time) or epoch seconds.
        """
        _check_keys(data, _METRIC_KEYS, "record_metric")
        name = _required_str(data, "metric_name", "record_metric")
        agent = data.get("agent_name") or "-"
        value = data.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValidationError(
                f"record_metric: value of metric {name!r} must be a finite number, got {value!r}",
                field="value",
            )
        ts = data.get("timestamp")
        if ts is None:
            at = self.clock.now()
        elif isinstance(ts, datetime):
            at = ts.timestamp()
        elif isinstance(ts, (int, float)) and not isinstance(ts, bool):
            at = float(ts)
        else:
            raise ValidationError(
                f"record_metric: timestamp of metric {name!r} must be a datetime or epoch seconds, got {ts!r}",
                field="timestamp",
            )
        unit = data.get("unit")
        if unit not in (None, "s", "ms"):
            raise ValidationError(f"record_metric: unit {unit!r} of metric {name!r} is unknown; use 's' or 'ms'",
                                  field="unit")
        duration = None if unit is None else float(value) * (1000.0 if unit == "s" else 1.0)
        self.metrics.observe(
            MetricSample(
                name=name, agent=str(agent), at=at, duration_ms=duration,
                value=None if duration is not None else float(value), error=bool(data.get("error", False)),
            )
        )

    async def save_user_project(self, data: Mapping[str, Any]) -> UserProjectRecord:
        """Create or update a project in the user's history from a dict; no session needed.

        Fields not given keep their stored values (`project_name` defaults to the project
        id for a new project). `download_count` and `last_accessed` are taken only when the
        project is created (to import a history); afterwards `record_download` moves them,
        and a `download_count` other than the stored one is refused. `session_id` (the
        session that generated the project) is kept in the record's metadata.
        """
        _check_keys(data, _USER_PROJECT_KEYS, "save_user_project")
        user_id = _required_str(data, "user_id", "save_user_project")
        project_id = _required_str(data, "project_id", "save_user_project")
        check_id("user", user_id, where="save_user_project")
        check_id("project", project_id, where="save_user_project")
        what = f"save_user_project: project {project_id} of user {user_id}"
        ids = {"user_id": user_id, "project_id": project_id}
        fields: dict[str, Any] = {}
        for key in ("project_name", "description", "file_path"):
            if data.get(key) is not None:
                if not isinstance(data[key], str):
                    raise ValidationError(f"{what}: {key} must be a string, got {data[key]!r}", field=key, **ids)
                fields[key] = data[key]
        tech = _json_field(data, "tech_stack", project_id, "save_user_project")
        if tech is not None:
            if not isinstance(tech, list) or not all(isinstance(t, str) for t in tech):
                raise ValidationError(f"{what}: tech_stack must be a list of strings", field="tech_stack", **ids)
            fields["tech_stack"] = tuple(tech)
        size = data.get("size_mb")
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, (int, float)):
                raise ValidationError(f"{what}: size_mb must be a number, got {size!r}", field="size_mb", **ids)
            fields["size_mb"] = float(size)
        metadata = _json_field(data, "metadata", project_id, "save_user_project")
        if metadata is not None and not isinstance(metadata, dict):
            raise ValidationError(f"{what}: metadata must be a JSON object", field="metadata", **ids)
        count = data.get("download_count")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
            raise ValidationError(f"{what}: download_count must be an integer >= 0, got {count!r}",
                                  field="download_count", **ids)

        stored = await self.get_user_project(user_id, project_id)
        if stored is None:
            meta: dict[str, Any] = dict(metadata or {})
            if data.get("session_id") is not None:
                meta["session_id"] = str(data["session_id"])
            record = UserProjectRecord(
                user_id, project_id, fields.pop("project_name", project_id), download_count=count or 0,
                last_accessed=_epoch(data.get("last_accessed"), what), metadata=meta, **fields,
            )
        else:
            if count is not None and count != stored.download_count:
                raise ValidationError(
                    f"{what}: download_count {count} differs from the stored {stored.download_count}; downloads "
                    f"are counted by `record_download` (drop download_count from the dict)",
                    field="download_count", **ids,
                )
            meta = {**stored.metadata, **(metadata or {})}
            if data.get("session_id") is not None:
                meta["session_id"] = str(data["session_id"])
            record = replace(stored, metadata=meta, **fields)
        return await self.store.put_user_project(record)

    async def get_user_project(self, user_id: str, project_id: str) -> UserProjectRecord | None:
        """A project of the user's history, or None if it was never saved."""
        try:
            return await self.store.get_user_project(user_id, project_id)
        except UserProjectNotFoundError:
            return None

    async def list_user_projects(self, user_id: str) -> list[UserProjectRecord]:
        """Every project of the user, by project id (all pages of the store's listing)."""
        found: list[UserProjectRecord] = []
        cursor: str | None = None
        while True:
            page = await self.store.list_user_projects(user_id, limit=100, cursor=cursor)
            found.extend(page.items)
            if page.cursor is None:
                return found
            cursor = page.cursor

    async def record_download(self, user_id: str, project_id: str, download_id: str) -> UserProjectRecord:
        """Count one download of a saved project (count + 1, last accessed now).

        Pass an id unique to the download (e.g. the request id): a call retried with the
        same id is not counted twice. UserProjectNotFoundError if the project was never saved.
        """
        return await self.store.record_download(user_id, project_id, download_id)

    def _resolve_execution(self, data: Mapping[str, Any]) -> tuple[SessionRecorder, str]:
        execution_id = data.get("execution_id")
        sid = data.get("session_id") or data.get("project_id")
        agent = data.get("agent_name")
        if execution_id is not None and not isinstance(execution_id, str):
            raise ValidationError("update_agent_execution: execution_id must be a string", field="execution_id")
        if sid is None:
            if execution_id is None:
                raise ValidationError(
                    "update_agent_execution: pass execution_id (\"<session_id>-<agent_name>\") or "
                    "session_id and agent_name",
                    field="execution_id",
                )
            matches = [s for s in self._recorders if execution_id.startswith(f"{s}-")]
            if not matches:
                raise SessionStateError(
                    f"update_agent_execution: execution_id {execution_id!r} names no session started or "
                    f"attached by this StateAPI (known: {', '.join(sorted(self._recorders)) or 'none'}); "
                    f"call save_pipeline_session first",
                    field="execution_id",
                )
            sid = max(matches, key=len)
        rec = self.recorder(str(sid))
        if agent is None:
            if execution_id is None or not execution_id.startswith(f"{sid}-"):
                raise ValidationError(
                    f"update_agent_execution: cannot tell the agent of session {sid}: pass agent_name or "
                    f"execution_id \"{sid}-<agent_name>\"",
                    session_id=str(sid), field="agent_name",
                )
            agent = execution_id[len(f"{sid}-"):]
        elif execution_id is not None and execution_id != f"{sid}-{agent}":
            raise ValidationError(
                f"update_agent_execution: execution_id {execution_id!r} does not match session {sid} and "
                f"agent {agent!r} (expected {sid}-{agent})",
                session_id=str(sid), field="execution_id",
            )
        return rec, str(agent)


def _epoch(value: Any, what: str) -> float | None:
    """A datetime (naive = local time) or epoch seconds, as epoch seconds; None stays None."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise ValidationError(f"{what}: last_accessed must be a datetime or epoch seconds, got {value!r}",
                          field="last_accessed")


def _check_keys(data: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    if not isinstance(data, Mapping):
        raise ValidationError(f"{where} takes a dict, got {type(data).__name__}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValidationError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(sorted(allowed))}",
            field=unknown[0],
        )


def _required_str(data: Mapping[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{where}: {key} is missing or not a non-empty string (got {value!r})", field=key)
    return value


def _json_field(data: Mapping[str, Any], key: str, sid: str, where: str) -> Any:
    """A field callers may pass as JSON text; decoded values are taken as they are."""
    value = data.get(key)
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValidationError(
            f"{where}: {key} of session {sid} is not valid JSON ({exc.msg} at {exc.pos}); pass "
            f"json.dumps(value) or the value itself",
            session_id=sid,
            field=key,
        ) from None


def _progress_field(data: Mapping[str, Any], sid: str, n_tasks: int) -> Progress | None:
    current = data.get("progress")
    if current is None:
        return None
    total = data.get("progress_total", n_tasks)
    for name, value in (("progress", current), ("progress_total", total)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValidationError(
                f"save_pipeline_session: {name} of session {sid} must be an integer >= 0, got {value!r}",
                session_id=sid, field=name,
            )
    if total and current > total:
        raise ValidationError(
            f"save_pipeline_session: progress {current} of session {sid} exceeds its {total} agents; "
            f"pass progress_total or the agents list",
            session_id=sid, field="progress",
        )
    return Progress(current=current, total=total)
