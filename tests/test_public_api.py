"""The public surface is pinned: adding or losing a public name must be a deliberate change."""

from __future__ import annotations

from orchestrator import agents
import orchestrator
import orchestrator.errors

ORCHESTRATOR_API = {
    "Clock", "Codec", "DagState", "JsonFormatter", "MetricsRecorder", "Pipeline", "ResumeReport",
    "RunOptions", "RunResult", "Secret", "SessionRecorder", "SessionStatus", "StateAPI", "Store",
    "StoreConfig", "SystemClock", "Task", "TaskStatus", "Telemetry", "UserProject", "Worker",
    "WorkerLimits", "WorkerReport", "agent_stats", "cancel_session", "open_store", "project_stats", "render", "resume",
    "resume_failed", "resume_sync", "run", "run_batch", "run_sync", "submit", "submit_sync",
}

AGENTS_API = {
    "Agent", "AgentContext", "AgentError", "AgentSpec", "AgentTimeoutError", "ApprovalAgent",
    "CachePolicy", "CommandAgent", "CommandFailedError", "Executor", "MapAgent", "MapPolicy", "NonRetryableError", "ProcessContext",
    "RetryPolicy", "SignalTimeoutError", "SyncAgentContext", "TaskSpec", "agent", "spec_of",
}


def test_orchestrator_exports_exactly_its_public_api() -> None:
    assert set(orchestrator.__all__) == ORCHESTRATOR_API


def test_agents_exports_exactly_its_public_api() -> None:
    assert set(agents.__all__) == AGENTS_API


def test_every_exported_name_exists_and_reports_its_package() -> None:
    for module in (orchestrator, agents, orchestrator.errors):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.__all__ names missing {name}"


def test_agent_errors_are_reexported_by_orchestrator_errors() -> None:
    for name in ("AgentError", "NonRetryableError", "SignalTimeoutError", "AgentTimeoutError", "CommandFailedError"):
        assert getattr(orchestrator.errors, name) is getattr(agents, name)


def test_every_orchestrator_error_derives_from_the_base() -> None:
    for name in orchestrator.errors.__all__:
        cls = getattr(orchestrator.errors, name)
        assert issubclass(cls, (orchestrator.errors.OrchestratorError, agents.AgentError)), name
