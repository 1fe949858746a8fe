"""`orchestrator metrics`: per-agent task counters, custom metrics and project aggregates for one day."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from orchestrator.cli._common import (
    add_row,
    console,
    emit_json,
    globals_of,
    jsonable,
    open_cli_store,
    run_async,
)
from orchestrator.durations import format_duration
from orchestrator.errors import ValidationError
from orchestrator.metrics import (
    SESSION_METRIC,
    agent_stats,
    day_totals,
    custom_stats,
    day_of,
    project_stats,
)
from orchestrator.store import (
    MetricSummary,
    ProjectStats,
)

__all__ = ["metrics_cmd"]

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value == float("inf"):
        return ">4.7h"
    return format_duration(value / 1000.0)


def _metric_row(s: MetricSummary) -> dict[str, Any]:
    return {"agent": s.agent, "hour": s.hour if s.hour >= 0 else None, "count": s.count, "errors": s.errors,
            "error_rate": round(s.error_rate, 4), "mean_ms": s.mean_ms, "p50_ms": s.percentile(0.5),
            "p95_ms": s.percentile(0.95), "min_ms": s.min_ms, "max_ms": s.max_ms}


def _custom_row(s: MetricSummary) -> dict[str, Any]:
    """A custom metric: a duration (recorded with a unit) or a sum of values."""
    if any(s.buckets):
        return {"name": s.name, "agent": s.agent, "kind": "duration", "count": s.count, "errors": s.errors,
                "sum_ms": s.sum_ms, "mean_ms": s.mean_ms, "p50_ms": s.percentile(0.5),
                "p95_ms": s.percentile(0.95)}
    return {"name": s.name, "agent": s.agent, "kind": "value", "count": s.count, "errors": s.errors,
            "sum": s.sum_ms, "mean": s.sum_ms / s.count if s.count else None}


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


@dataclass(frozen=True, slots=True)
class _Metrics:
    """What `metrics` shows for one day (agents limited to a project's when asked)."""

    day: str
    hourly: list[MetricSummary]
    daily: list[MetricSummary]
    custom: list[MetricSummary]
    projects: list[ProjectStats]
    agents_of: str | None = None  # the project whose tasks these count


def metrics_cmd(
    ctx: typer.Context,
    date: Annotated[str | None, typer.Option("--date", help="UTC day YYYY-MM-DD (default today).")] = None,
    agent: Annotated[str | None, typer.Option("--agent", help="Only this agent.")] = None,
    project: Annotated[str | None, typer.Option("--project", help="Only this project: its aggregates, its "
                                                "sessions' tasks per agent, its agents' custom metrics.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Per agent and hour: count, error rate, mean, p50, p95; custom metrics; and project aggregates."""
    g = globals_of(ctx)
    if date is not None:
        import datetime as dt

        try:
            dt.date.fromisoformat(date)
        except ValueError:
            raise ValidationError(f"--date {date!r} is not a date; use YYYY-MM-DD (UTC)") from None

    async def go() -> _Metrics:
        async with open_cli_store(g, read_only=True) as store:
            day = date or day_of(store.clock.now())[0]
            hourly = await agent_stats(store, day, agent, by_hour=True, project=project)
            daily = day_totals(hourly, day)  # from the same read: a flush in between cannot split them
            custom = await custom_stats(store, day, agent)
            if project is None:
                rows = await store.read_metrics(day, name=SESSION_METRIC)
                projects = sorted({r.agent.removeprefix("project:") for r in rows if r.agent.startswith("project:")})
                return _Metrics(day, hourly, daily, custom, [await project_stats(store, p, [day]) for p in projects])
            agents = {s.agent for s in daily}  # custom metrics are per agent: keep this project's agents'
            return _Metrics(day, hourly, daily, [s for s in custom if s.agent in agents],
                            [await project_stats(store, project, [day])], agents_of=project)

    m = run_async(go)
    if as_json:
        emit_json({"date": m.day, "agents": [_metric_row(s) for s in m.daily],
                   "hourly": [_metric_row(s) for s in m.hourly], "metrics": [_custom_row(s) for s in m.custom],
                   "projects": [{**jsonable(p), "success_rate": round(p.success_rate, 4)} for p in m.projects]})
        return
    title = f"agents on {m.day} (UTC)"
    if m.agents_of is not None:
        title = f"agents of project {m.agents_of} on {m.day} (UTC)"
    table = Table(title=Text(title), title_justify="left")
    for col in ("agent", "hour", "count", "errors", "error rate", "mean", "p50", "p95"):
        table.add_column(col, justify="left" if col == "agent" else "right")
    by_agent: dict[str, list[MetricSummary]] = {}
    for s in m.hourly:
        by_agent.setdefault(s.agent, []).append(s)
    for total in m.daily:
        for s in [*by_agent.get(total.agent, []), total]:
            r = _metric_row(s)
            add_row(table, s.agent, "day" if r["hour"] is None else f"{s.hour:02d}", str(s.count), str(s.errors),
                    f"{100 * s.error_rate:.1f}%", _ms(s.mean_ms), _ms(r["p50_ms"]), _ms(r["p95_ms"]),
                    end_section=r["hour"] is None)
    console.print(table, highlight=False)
    if m.custom:
        ct = Table(title=Text(f"custom metrics on {m.day} (UTC)"), title_justify="left")
        for col in ("metric", "agent", "count", "errors", "sum", "mean", "p50", "p95"):
            ct.add_column(col, justify="left" if col in ("metric", "agent") else "right")
        for s in m.custom:
            r = _custom_row(s)
            if r["kind"] == "duration":
                add_row(ct, s.name, s.agent, str(s.count), str(s.errors), _ms(r["sum_ms"]), _ms(r["mean_ms"]),
                        _ms(r["p50_ms"]), _ms(r["p95_ms"]))
            else:
                add_row(ct, s.name, s.agent, str(s.count), str(s.errors), _number(r["sum"]), _number(r["mean"]),
                        "-", "-")
        console.print(ct, highlight=False)
    if m.projects:
        pt = Table(title=Text(f"projects on {m.day} (UTC)"), title_justify="left")
        for col in ("project", "sessions", "completed", "failed", "blocked", "success rate", "mean duration"):
            pt.add_column(col, justify="left" if col == "project" else "right")
        for p in m.projects:
            add_row(pt, p.project_id, str(p.total), str(p.completed), str(p.failed), str(p.blocked),
                    f"{100 * p.success_rate:.1f}%", _ms(p.mean_duration_ms))
        console.print(pt, highlight=False)
