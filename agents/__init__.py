"""What agent authors import: declare agents, read their context, control retries.

Nothing here imports `orchestrator`: the engine implements `AgentContext`.
"""

from __future__ import annotations

from agents.approval import ApprovalAgent
from agents.command import CommandAgent
from agents.context import AgentContext, ProcessContext, SyncAgentContext, TaskSpec
from agents.errors import (
    AgentError,
    AgentTimeoutError,
    CommandFailedError,
    NonRetryableError,
    SignalTimeoutError,
)
from agents.retry import RetryPolicy
from agents.spec import Agent, AgentSpec, Executor, agent, spec_of

__all__ = [
    "Agent",
    "AgentContext",
    "AgentError",
    "AgentSpec",
    "AgentTimeoutError",
    "ApprovalAgent",
    "CommandAgent",
    "CommandFailedError",
    "Executor",
    "NonRetryableError",
    "ProcessContext",
    "RetryPolicy",
    "SignalTimeoutError",
    "SyncAgentContext",
    "TaskSpec",
    "agent",
    "spec_of",
]
