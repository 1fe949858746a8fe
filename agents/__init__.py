"""What agent authors import: declare agents, read their context, control retries.

Nothing here imports `orchestrator`: the engine implements `AgentContext`.
"""

from __future__ import annotations

from orchestrator.agents.approval import ApprovalAgent
from orchestrator.agents.cache import CachePolicy
from orchestrator.agents.command import CommandAgent
from orchestrator.agents.context import AgentContext, MapPolicy, ProcessContext, SyncAgentContext, TaskSpec
from orchestrator.agents.errors import (
    AgentError,
    AgentTimeoutError,
    CommandFailedError,
    NonRetryableError,
    SignalTimeoutError,
)
from orchestrator.agents.map import MapAgent
from orchestrator.agents.retry import RetryPolicy
from orchestrator.agents.spec import Agent, AgentSpec, Executor, agent, spec_of

__all__ = [
    "Agent",
    "AgentContext",
    "AgentError",
    "AgentSpec",
    "AgentTimeoutError",
    "ApprovalAgent",
    "CachePolicy",
    "CommandAgent",
    "CommandFailedError",
    "Executor",
    "MapAgent",
    "MapPolicy",
    "NonRetryableError",
    "ProcessContext",
    "RetryPolicy",
    "SignalTimeoutError",
    "SyncAgentContext",
    "TaskSpec",
    "agent",
    "spec_of",
]
