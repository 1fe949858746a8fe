"""The run knobs as the entry points take them: lease length, per-agent limits, progress interval.

The CLI (`--lease 30s`, `--agent-limit build=2`, `--progress-interval 2s`) and the Lambda
handlers (event fields or ORCHESTRATOR_* variables) parse them here, so both accept the
same forms and refuse a bad value with one ValidationError before anything runs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from orchestrator.durations import parse_duration
from orchestrator.errors import ValidationError
from orchestrator.graph import Pipeline
from orchestrator.scheduler import RunOptions, WorkerLimits

__all__ = ["Knobs", "parse_agent_limits"]

_LIMIT = re.compile(r"^\s*([A-Za-z0-9_.:@-]+)\s*=\s*(\d+)\s*$")


def parse_agent_limits(specs: Iterable[str], *, what: str = "--agent-limit") -> dict[str, int]:
    """`["build=2", "deploy=1,test=3"]` -> `{"build": 2, "deploy": 1, "test": 3}`; each limit >= 1."""
    limits: dict[str, int] = {}
    for spec in specs:
        for part in (p for p in spec.split(",") if p.strip()):
            match = _LIMIT.match(part)
            if match is None:
                raise ValidationError(f"{what} {part.strip()!r} is not AGENT=N; use e.g. build=2 (an agent name, =, a count)")
            name, n = match.group(1), int(match.group(2))
            if n < 1:
                raise ValidationError(f"{what} {name}={n}: a limit must be 1 or more (with 0 the agent never runs)")
            if name in limits and limits[name] != n:
                raise ValidationError(f"{what} names agent {name!r} twice ({limits[name]} and {n}); give it once")
            limits[name] = n
    return limits


@dataclass(frozen=True, slots=True)
class Knobs:
    """Lease length, per-agent limits and progress interval, each None/empty when not given."""

    lease: float | None = None
    progress_interval: float | None = None
    agent_limits: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, *, lease: str | None = None, progress_interval: str | None = None,
              agent_limits: Iterable[str] = (), names: tuple[str, str, str] = (
                  "--lease", "--progress-interval", "--agent-limit")) -> Knobs:
        """Parse the textual forms; `names` are how the caller calls them in error messages."""
        lease_s = _positive(lease, names[0]) if lease is not None else None
        interval = _positive(progress_interval, names[1]) if progress_interval is not None else None
        return cls(lease_s, interval, parse_agent_limits(agent_limits, what=names[2]))

    def check_agents(self, pipelines: Iterable[Pipeline], *, what: str = "--agent-limit") -> None:
        """Refuse a limit for an agent no loaded pipeline defines (a typo would limit nothing)."""
        known = {name for p in pipelines for name in p.agents}
        unknown = sorted(set(self.agent_limits) - known)
        if unknown:
            raise ValidationError(f"{what} names agent(s) {', '.join(unknown)} that no pipeline given defines; "
                                  f"known agents: {', '.join(sorted(known)) or '(none)'}")

    def options(self, base: RunOptions | None = None, *, per_session_limits: bool = True) -> RunOptions:
        """`base` with these knobs; agent limits become per-session limits unless a worker shares them."""
        out = base or RunOptions()
        if self.lease is not None:
            out = out.with_lease(self.lease, where="the lease option")
        if self.progress_interval is not None:
            out = replace(out, progress_interval=self.progress_interval)
        if per_session_limits and self.agent_limits:
            out = replace(out, agent_concurrency={**out.agent_concurrency, **self.agent_limits})
        return out

    def worker_limits(self) -> WorkerLimits:
        """Limits shared by every session of one worker: at most N agents of each name at once."""
        return WorkerLimits(per_agent=dict(self.agent_limits))


def _positive(text: str, what: str) -> float:
    seconds = parse_duration(text, what=what)
    if seconds <= 0:
        raise ValidationError(f"{what} {text!r} must be more than 0; use e.g. 30s")
    return seconds
