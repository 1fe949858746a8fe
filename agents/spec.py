"""Declaring agents: the `@agent` decorator and the `Agent` base class.

Decorators annotate, runners register: `@agent` attaches an `AgentSpec` to the
function and returns the function itself; a `Pipeline` is given its agents
explicitly. Nothing is registered process-wide.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, overload

from orchestrator.agents.cache import CachePolicy
from orchestrator.agents.retry import RetryPolicy

__all__ = ["Agent", "AgentSpec", "Executor", "agent", "spec_of"]

Executor = Literal["async", "thread", "process"]
F = TypeVar("F", bound=Callable[..., Any])
_SPEC_ATTR = "__agent_spec__"


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """How to run one agent: its callable, name, retry policy, timeout, executor and resources.

    `fn` takes one argument, the context (`AgentContext`, `SyncAgentContext` or
    `ProcessContext` by executor), and returns a JSON-serialisable output. `uses` names
    the fleet-wide resources each run holds (`{"openai": 1}`), limited with
    `orchestrator limits set`.
    """

    name: str
    fn: Callable[..., Any]
    retry: RetryPolicy = RetryPolicy()
    timeout: float | None = None
    executor: Executor = "async"
    uses: Mapping[str, int] = field(default_factory=dict, hash=False)  # a dict: kept out of the hash
    cache: CachePolicy | None = None  # reuse outputs across sessions (see CachePolicy)

    def __post_init__(self) -> None:
        if not self.name or "#" in self.name:
            raise ValueError(f"agent name {self.name!r} is invalid: use a non-empty name without '#'")
        if self.executor not in ("async", "thread", "process"):
            raise ValueError(
                f"agent {self.name!r}: executor={self.executor!r}; use 'async', 'thread' or 'process'"
            )
        # A callable object counts as async when its `__call__` is (looked up on the type, as a call does).
        is_coro = inspect.iscoroutinefunction(self.fn) or inspect.iscoroutinefunction(type(self.fn).__call__)
        if self.executor == "async" and not is_coro:
            raise ValueError(
                f"agent {self.name!r} is a sync function; declare it with executor='thread' "
                f"(or 'process'), or make it `async def`"
            )
        if self.executor != "async" and is_coro:
            raise ValueError(
                f"agent {self.name!r} is async; executor={self.executor!r} runs sync functions only"
            )
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"agent {self.name!r}: timeout={self.timeout} must be > 0 seconds")
        object.__setattr__(self, "uses", check_uses(self.uses, f"agent {self.name!r}"))


def check_uses(uses: Mapping[str, int] | None, where: str) -> dict[str, int]:
    """`{"openai": 1}`: resource names (letters, digits, `_.:-`) and units held (an int >= 1)."""
    if uses is not None and not isinstance(uses, Mapping):
        raise ValueError(f"{where}: uses={uses!r}; pass a dict of resource name to units, e.g. {{'openai': 1}}")
    out: dict[str, int] = {}
    for name, amount in (uses or {}).items():
        if not isinstance(name, str) or not name or len(name) > 64 or "#" in name or "/" in name:
            raise ValueError(f"{where}: resource name {name!r} is invalid; use 1-64 letters, digits or '_.:-'")
        if isinstance(amount, bool) or not isinstance(amount, int) or amount < 1:
            raise ValueError(f"{where}: uses[{name!r}]={amount!r}; pass an int of 1 or more")
        out[name] = amount
    return out


@overload
def agent(fn: F, /) -> F: ...
@overload
def agent(
    *,
    name: str | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    executor: Executor | None = None,
    uses: Mapping[str, int] | None = None,
    cache: CachePolicy | None = None,
) -> Callable[[F], F]: ...


def agent(
    fn: F | None = None,
    /,
    *,
    name: str | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    executor: Executor | None = None,
    uses: Mapping[str, int] | None = None,
    cache: CachePolicy | None = None,
) -> F | Callable[[F], F]:
    """Mark a function as an agent: `@agent` or `@agent(name=..., retry=..., timeout=..., uses=..., cache=...)`.

    Sync functions default to the "thread" executor, async ones to "async". `uses`
    (`{"openai": 1}`) names the fleet-wide resources each run holds.
    """

    def mark(f: F) -> F:
        chosen: Executor = executor or ("async" if inspect.iscoroutinefunction(f) else "thread")
        spec = AgentSpec(
            name=name or f.__name__,
            fn=f,
            retry=retry or RetryPolicy(),
            timeout=timeout,
            executor=chosen,
            uses=dict(uses or {}),
            cache=cache,
        )
        setattr(f, _SPEC_ATTR, spec)
        return f

    return mark(fn) if fn is not None else mark


class Agent:
    """Base class for stateful agents: override `run(ctx)`; set class attributes to configure.

        class Reviewer(Agent):
            name = "review"
            retry = RetryPolicy(max_attempts=5)
            async def run(self, ctx: AgentContext) -> dict: ...
    """

    name: str = ""
    retry: RetryPolicy = RetryPolicy()
    timeout: float | None = None
    uses: Mapping[str, int] = {}  # read only: copied into the spec

    async def run(self, ctx: Any) -> Any:
        raise TypeError(f"{type(self).__name__} must override `async def run(self, ctx)`")

    def spec(self) -> AgentSpec:
        return AgentSpec(
            name=self.name or type(self).__name__,
            fn=self.run,
            retry=self.retry,
            timeout=self.timeout,
            executor="async",
            uses=dict(self.uses),
        )


def spec_of(obj: Any) -> AgentSpec:
    """The `AgentSpec` of an `@agent` function, an `Agent` instance, or a spec itself."""
    if isinstance(obj, AgentSpec):
        return obj
    if isinstance(obj, Agent):
        return obj.spec()
    spec = getattr(obj, _SPEC_ATTR, None)
    if isinstance(spec, AgentSpec):
        return spec
    if callable(obj):
        name = getattr(obj, "__name__", None) or type(obj).__name__
        is_async = inspect.iscoroutinefunction(obj)
        return AgentSpec(name=name, fn=obj, executor="async" if is_async else "thread")
    raise TypeError(
        f"{obj!r} is not an agent: decorate a function with @agent, subclass orchestrator.agents.Agent, "
        f"or pass an AgentSpec"
    )
