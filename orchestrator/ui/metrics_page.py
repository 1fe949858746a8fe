"""The metrics page: per agent and hour (count, error rate, p50/p95) as small SVG bar charts,
a per-agent table for the day, and the projects' session outcomes."""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.store import MetricSummary
from orchestrator.ui.html import cmd, esc, fmt_ms, message
from orchestrator.ui.queries import MetricsView

__all__ = ["bar_chart", "metrics_page"]

_W, _H, _PAD = 360.0, 110.0, 18.0


def bar_chart(title: str, series: Sequence[tuple[str, Sequence[float | None]]], fmt: str = "{:.0f}") -> str:
    """24 hourly slots, one bar group per hour (one bar per series); the largest value sets the scale."""
    top = max((v for _, values in series for v in values if v is not None), default=0.0) or 1.0
    slot = (_W - 2 * _PAD) / 24
    width = slot / max(1, len(series)) - 1
    bars = []
    for n, (name, values) in enumerate(series):
        for hour, value in enumerate(values):
            if value is None or value <= 0:
                continue
            h = (_H - 2 * _PAD) * value / top
            x = _PAD + hour * slot + n * (width + 1)
            bars.append(f'<rect class="series-{n}" x="{x:.1f}" y="{_H - _PAD - h:.1f}" width="{max(width, 1):.1f}" '
                        f'height="{h:.1f}"><title>{esc(name)} {hour:02d}:00 {esc(fmt.format(value))}</title></rect>')
    ticks = "".join(f'<text class="tick" x="{_PAD + h * slot:.1f}" y="{_H - 4:.0f}">{h:02d}</text>'
                    for h in range(0, 24, 6))
    legend = " ".join(f'<tspan class="series-{n}-text">■ {esc(name)}</tspan>' for n, (name, _) in enumerate(series))
    return (f'<svg class="chart" width="{_W:.0f}" height="{_H:.0f}" viewBox="0 0 {_W:.0f} {_H:.0f}" role="img" '
            f'aria-label="{esc(title)}"><text class="chart-title" x="{_PAD}" y="12">{esc(title)} · max '
            f'{esc(fmt.format(top))} · {legend}</text>'
            f'<line class="axis" x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - _PAD}" y2="{_H - _PAD}"/>'
            f'{"".join(bars)}{ticks}</svg>')


def _by_hour(rows: Sequence[MetricSummary]) -> dict[int, MetricSummary]:
    return {r.hour: r for r in rows if 0 <= r.hour < 24}


def _agent_block(agent: str, rows: Sequence[MetricSummary]) -> str:
    hours = _by_hour(rows)
    slots = [hours.get(h) for h in range(24)]
    counts = [float(s.count) if s else None for s in slots]
    errors = [float(s.errors) if s else None for s in slots]
    rate = [100.0 * s.error_rate if s else None for s in slots]
    p50 = [s.percentile(0.5) if s else None for s in slots]
    p95 = [s.percentile(0.95) if s else None for s in slots]
    return (f'<div class="agent-metrics" data-agent="{esc(agent)}"><h3>{esc(agent)}</h3>'
            + bar_chart("executions per hour", [("count", counts), ("errors", errors)])
            + bar_chart("error rate per hour", [("error %", rate)], "{:.0f}%")
            + bar_chart("duration per hour", [("p50", p50), ("p95", p95)], "{:.0f}ms") + "</div>")


def metrics_page(view: MetricsView, store_url: str) -> str:
    days = "".join(f'<option{" selected" if d == view.day else ""}>{d}</option>' for d in view.days)
    picker = (f'<form class="filters" method="get" action="/metrics"><label>day (UTC) <select name="day">{days}'
              f'</select></label><button type="submit">Show</button></form>')
    if not view.totals and not view.projects:
        body = message("empty", f"No metrics for {view.day}",
                       "<p>Workers and runs write per-agent counters every few seconds while they execute tasks; "
                       f"run a pipeline, then reload. From the command line: "
                       f"{cmd(f'orchestrator --store {store_url} metrics')}</p>")
        return f"<h1>Metrics</h1>{picker}{body}"
    table = "".join(
        f'<tr data-agent="{esc(t.agent)}"><td>{esc(t.agent)}</td><td>{t.count}</td><td>{t.errors}</td>'
        f"<td>{100 * t.error_rate:.1f}%</td><td>{fmt_ms(t.percentile(0.5))}</td><td>{fmt_ms(t.percentile(0.95))}</td>"
        f"<td>{fmt_ms(t.mean_ms)}</td></tr>" for t in view.totals)
    agents = "".join(_agent_block(agent, rows) for agent, rows in sorted(view.hourly.items()))
    projects = "".join(
        f'<tr data-project="{esc(p.project_id)}"><td>{esc(p.project_id)}</td><td>{p.total}</td><td>{p.completed}</td>'
        f"<td>{p.failed}</td><td>{p.blocked}</td>"
        f"<td>{(100 * p.completed / p.total if p.total else 0):.1f}%</td><td>{fmt_ms(p.mean_duration_ms)}</td></tr>"
        for p in view.projects) or '<tr><td colspan="7" class="muted">no project sessions ended this day</td></tr>'
    return (f"<h1>Metrics <small>{esc(view.day)}</small></h1>{picker}"
            f'<h2>Agents</h2><table class="metrics" id="agent-totals"><thead><tr><th>agent</th><th>executions</th>'
            f"<th>errors</th><th>error rate</th><th>p50</th><th>p95</th><th>mean</th></tr></thead>"
            f"<tbody>{table}</tbody></table>"
            f'<div class="charts">{agents}</div>'
            f'<h2>Projects</h2><table class="metrics" id="project-totals"><thead><tr><th>project</th><th>sessions</th>'
            f"<th>completed</th><th>failed</th><th>blocked</th><th>success rate</th><th>mean duration</th></tr>"
            f"</thead><tbody>{projects}</tbody></table>")
