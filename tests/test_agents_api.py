"""The agent author's API: @agent, Agent subclasses, spec_of, RetryPolicy, ApprovalAgent."""

from __future__ import annotations

import random
from typing import Any

import pytest

from orchestrator.agents import (
    Agent,
    AgentSpec,
    ApprovalAgent,
    NonRetryableError,
    RetryPolicy,
    SignalTimeoutError,
    agent,
    spec_of,
)
from orchestrator.testing import FakeAgentContext

# -- @agent ---------------------------------------------------------------------------------


def test_bare_decorator_returns_the_function_with_a_spec() -> None:
    async def summarize(ctx: Any) -> str:
        return "ok"

    decorated = agent(summarize)
    assert decorated is summarize
    spec = spec_of(summarize)
    assert (spec.name, spec.executor, spec.fn) == ("summarize", "async", summarize)
    assert spec.retry == RetryPolicy()


def test_decorator_with_options() -> None:
    policy = RetryPolicy(max_attempts=7)

    @agent(name="review", retry=policy, timeout=30)
    async def fn(ctx: Any) -> None:
        return None

    spec = spec_of(fn)
    assert (spec.name, spec.retry, spec.timeout) == ("review", policy, 30)


def test_sync_function_defaults_to_thread_executor() -> None:
    @agent
    def build(ctx: Any) -> int:
        return 1

    assert spec_of(build).executor == "thread"


def test_sync_function_may_run_in_a_process() -> None:
    @agent(executor="process")
    def crunch(ctx: Any) -> int:
        return 1

    assert spec_of(crunch).executor == "process"


def test_async_function_on_thread_executor_is_rejected() -> None:
    async def fn(ctx: Any) -> None:
        return None

    with pytest.raises(ValueError, match="is async; executor='thread' runs sync functions only"):
        agent(executor="thread")(fn)


def test_sync_function_on_async_executor_is_rejected() -> None:
    def fn(ctx: Any) -> None:
        return None

    with pytest.raises(ValueError, match="is a sync function"):
        AgentSpec(name="fn", fn=fn, executor="async")


def test_name_with_hash_is_rejected() -> None:
    async def fn(ctx: Any) -> None:
        return None

    with pytest.raises(ValueError, match="agent name 'a#b' is invalid"):
        agent(name="a#b")(fn)


def test_non_positive_timeout_is_rejected() -> None:
    async def fn(ctx: Any) -> None:
        return None

    with pytest.raises(ValueError, match="timeout=0 must be > 0"):
        agent(timeout=0)(fn)


# -- Agent subclasses and spec_of -----------------------------------------------------------


class Reviewer(Agent):
    name = "review"
    retry = RetryPolicy(max_attempts=5)
    timeout = 12.0

    async def run(self, ctx: Any) -> str:
        return "reviewed"


class Unnamed(Agent):
    async def run(self, ctx: Any) -> None:
        return None


def test_agent_subclass_spec_uses_class_attributes() -> None:
    reviewer = Reviewer()
    spec = spec_of(reviewer)
    assert (spec.name, spec.retry.max_attempts, spec.timeout, spec.executor) == ("review", 5, 12.0, "async")
    assert spec.fn == reviewer.run


def test_agent_subclass_without_name_uses_class_name() -> None:
    assert spec_of(Unnamed()).name == "Unnamed"


def test_spec_of_a_spec_is_itself() -> None:
    spec = spec_of(Reviewer())
    assert spec_of(spec) is spec


def test_spec_of_a_plain_callable_infers_executor() -> None:
    async def a(ctx: Any) -> None:
        return None

    def s(ctx: Any) -> None:
        return None

    assert spec_of(a).executor == "async"
    assert spec_of(s).executor == "thread"


def test_spec_of_a_non_agent_explains_how_to_declare_one() -> None:
    with pytest.raises(TypeError, match="is not an agent: decorate a function with @agent"):
        spec_of(42)


# -- RetryPolicy ----------------------------------------------------------------------------


def test_delay_grows_exponentially_without_jitter() -> None:
    policy = RetryPolicy(initial_backoff=1.0, backoff_factor=2.0, max_backoff=10.0, jitter=0.0)
    assert [policy.delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 10.0]


def test_delay_jitter_is_reproducible_with_a_seeded_random() -> None:
    policy = RetryPolicy(initial_backoff=2.0, jitter=0.5)
    first = [policy.delay(n, random.Random(7)) for n in range(1, 5)]
    second = [policy.delay(n, random.Random(7)) for n in range(1, 5)]
    assert first == second
    for n, value in enumerate(first, start=1):
        base = 2.0 * 2.0 ** (n - 1)
        assert base * 0.5 <= value <= base * 1.5


def test_delay_never_exceeds_the_cap_with_jitter() -> None:
    policy = RetryPolicy(initial_backoff=1.0, max_backoff=5.0, jitter=1.0)
    rng = random.Random(0)
    assert all(0.0 <= policy.delay(n, rng) <= 5.0 for n in range(1, 50))


def test_non_retryable_types_and_error() -> None:
    policy = RetryPolicy(non_retryable=(KeyError,))
    assert not policy.is_retryable(KeyError("k"))
    assert not policy.is_retryable(NonRetryableError("stop"))
    assert policy.is_retryable(RuntimeError("again"))


def test_default_policy_retries_ordinary_errors() -> None:
    assert RetryPolicy().is_retryable(ValueError("x"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_attempts": 0}, "max_attempts=0"),
        ({"initial_backoff": -1}, "backoffs must be >= 0"),
        ({"backoff_factor": 0.5}, "backoff_factor=0.5"),
        ({"jitter": 2}, "jitter=2"),
    ],
)
def test_invalid_policy_is_rejected(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**kwargs)


# -- ApprovalAgent --------------------------------------------------------------------------


def signal_context(payload: Any = None, times_out: bool = False) -> FakeAgentContext:
    """A context whose approval signal carries `payload` (or never arrives)."""
    return FakeAgentContext(session_id="s-9", task_id="gate", agent="approval",
                            signals={} if times_out else {"approval": payload, "release": payload})


@pytest.mark.anyio
@pytest.mark.parametrize("payload", [{"approved": True, "by": "ana"}, "approve", "Approved", True])
async def test_approval_returns_an_approving_payload(payload: Any) -> None:
    ctx = signal_context(payload=payload)
    assert await ApprovalAgent(timeout=60).run(ctx) == payload
    assert ctx.waited == [("approval", 60)]


@pytest.mark.anyio
async def test_rejection_raises_non_retryable_with_reason() -> None:
    ctx = signal_context(payload={"approved": False, "reason": "tests are red", "by": "bo"})
    with pytest.raises(NonRetryableError, match="task gate of session s-9 was rejected: tests are red \\(by bo\\)"):
        await ApprovalAgent().run(ctx)


@pytest.mark.anyio
async def test_rejection_string_raises_non_retryable() -> None:
    with pytest.raises(NonRetryableError, match="was rejected"):
        await ApprovalAgent().run(signal_context(payload="reject"))


@pytest.mark.anyio
async def test_unrecognised_payload_says_what_to_send() -> None:
    with pytest.raises(NonRetryableError, match="neither approves nor rejects"):
        await ApprovalAgent().run(signal_context(payload={"ok": 1}))


@pytest.mark.anyio
async def test_custom_signal_name_and_timeout_propagates() -> None:
    ctx = signal_context(times_out=True)
    with pytest.raises(SignalTimeoutError):
        await ApprovalAgent("release-gate", signal="release", timeout=5).run(ctx)
    assert ctx.waited == [("release", 5)]


def test_approval_spec_is_one_async_attempt() -> None:
    spec = spec_of(ApprovalAgent("gate"))
    assert (spec.name, spec.executor, spec.retry.max_attempts, spec.timeout) == ("gate", "async", 1, None)


def test_an_agent_declares_the_resources_it_uses_and_a_bad_declaration_is_refused() -> None:
    from orchestrator.agents import spec_of

    @agent(uses={"openai": 2})
    async def llm(ctx: Any) -> None: ...

    assert spec_of(llm).uses == {"openai": 2}
    with pytest.raises(ValueError, match="uses\\['openai'\\]=0"):
        agent(uses={"openai": 0})(llm)
    with pytest.raises(ValueError, match="resource name"):
        agent(uses={"a/b": 1})(llm)


def test_a_task_s_uses_are_checked_when_it_is_added() -> None:
    from orchestrator.errors import PipelineDefinitionError
    from orchestrator.graph import Pipeline

    @agent
    async def step(ctx: Any) -> None: ...

    pipe = Pipeline("p", agents=[step]).task("t", step, uses={"github": 1})
    assert pipe.tasks["t"].uses == (("github", 1),)
    with pytest.raises(PipelineDefinitionError, match="github"):
        Pipeline("q", agents=[step]).task("t", step, uses={"github": -1})
