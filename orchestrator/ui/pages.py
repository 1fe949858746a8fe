"""The sessions list, a session's page and a task's panel, as HTML.

Live parts are fragments inside an element with `data-live="URL"`: the page script
polls that URL every 1.5 s with the fingerprint it last drew, and the server answers
204 when nothing changed (polling, not server-sent events: it survives proxies and
restarts of the server, and a fragment costs one store read).
"""

from __future__ import annotations

import json
from typing import Any

from orchestrator.store import SessionRecord, SessionStatus, TaskRecord, TaskStatus
from orchestrator.ui.children import link_facts
from orchestrator.ui.dag_svg import dag_svg
from orchestrator.ui.html import cmd, esc, fmt_age, fmt_ms, fmt_time, message
from orchestrator.ui.queries import LIST_ORDER, SessionFilter, SessionList, SessionView

__all__ = ["OUTPUT_PREVIEW", "session_live", "session_page", "sessions_page", "sessions_rows", "task_panel"]

OUTPUT_PREVIEW = 2000  # characters of an output shown inline; the rest is a download


def _status(status: str) -> str:
    return f'<span class="pill s-{esc(status)}" data-status="{esc(status)}">{esc(status)}</span>'


def _progress(current: int, total: int, label: str = "") -> str:
    pct = 0 if total <= 0 else round(100 * min(1.0, current / total))
    text = f"{current}/{total}" + (f" · {label}" if label else "")
    return (f'<span class="progress" title="{esc(text)}"><span class="fill" style="width:{pct}%"></span>'
            f'<span class="label">{esc(text)}</span></span>')


# -- the sessions list ---------------------------------------------------------------------------


def _filters(f: SessionFilter) -> str:
    options = "".join(f'<option value="{s.value}"{" selected" if f.status is s else ""}>{s.value}</option>'
                      for s in LIST_ORDER)

    def box(name: str, label: str, value: str | None) -> str:
        return f'<label>{label} <input name="{name}" value="{esc(value or "")}" size="12"></label>'

    return (f'<form class="filters" method="get" action="/"><label>status <select name="status">'
            f'<option value="">any</option>{options}</select></label>'
            f'{box("project", "project", f.project)}{box("user", "user", f.user)}'
            f'{box("type", "pipeline type", f.pipeline_type)}'
            f'<label><input type="checkbox" name="needs_human" value="1"{" checked" if f.needs_human else ""}> '
            f'needs-human</label><button type="submit">Filter</button>'
            + ('<a href="/">clear</a>' if f.narrowed else "") + "</form>")


def _row(s: SessionRecord, now: float) -> str:
    note = f"needs-human: {s.needs_human_reason}" if s.needs_human else (s.reason or "")
    return (
        f'<tr data-session="{esc(s.session_id)}" data-status="{s.status.value}">'
        f'<td><a href="/sessions/{esc(s.session_id)}">{esc(s.session_id)}</a></td>'
        f"<td>{_status(s.status.value)}" + (' <span class="flag">needs-human</span>' if s.needs_human else "")
        + f"</td><td>{esc(s.pipeline)}<small> v{esc(s.pipeline_version)}</small></td>"
        f"<td>{esc(s.project_id or '-')}</td><td>{esc(s.user_id or '-')}</td><td>{esc(s.pipeline_type or '-')}</td>"
        f"<td>{_progress(s.progress.current, s.progress.total)}</td>"
        f'<td title="{fmt_time(s.created_at)}">{fmt_age(now - s.created_at)}</td>'
        f'<td title="{fmt_time(s.updated_at)}">{fmt_age(now - s.updated_at)}</td>'
        f"<td>{esc(s.lease_owner or '-')}</td><td class=\"note\">{esc(note[:160])}</td></tr>"
    )


def sessions_rows(page: SessionList, f: SessionFilter, store_url: str) -> str:
    """The live part of the list: the table (or the empty state) and the paging links."""
    if not page.items:
        if f.narrowed or f.cursor:
            return message("empty", "No sessions match these filters",
                           '<p>Widen the filters, or <a href="/">show every session</a>.</p>')
        return message("empty", "No sessions yet",
                       f"<p>Run a pipeline into this store, and it appears here within seconds:</p>"
                       f"<p>{cmd(f'orchestrator --store {store_url} run MODULE:PIPELINE')}</p>"
                       f"<p>or submit one for a worker: "
                       f"{cmd(f'orchestrator --store {store_url} submit MODULE:PIPELINE')}</p>")
    head = "".join(f"<th>{h}</th>" for h in ("session", "status", "pipeline", "project", "user", "type",
                                             "progress", "age", "updated", "owner", "note"))
    rows = "".join(_row(s, page.now) for s in page.items)
    more = (f'<a class="next" href="/?{esc(f.query(cursor=page.cursor))}">next page →</a>'
            if page.cursor else '<span class="end">end of list</span>')
    first = '<a href="/?' + esc(f.query()) + '">← first page</a> ' if f.cursor else ""
    return (f'<table class="sessions"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'
            f'<p class="paging">{first}{len(page.items)} session(s) · {more}</p>')


def sessions_page(page: SessionList, f: SessionFilter, store_url: str, fp: str) -> str:
    live = f"/fragments/sessions?{f.query(cursor=f.cursor)}"
    return (f"<h1>Sessions</h1>{_filters(f)}"
            f'<div id="sessions" data-live="{esc(live)}" data-fp="{fp}">{sessions_rows(page, f, store_url)}</div>')


# -- one session ----------------------------------------------------------------------------------


def _action(name: str, session_id: str, label: str, confirm: str, fields: dict[str, str] | None = None,
            inputs: str = "", danger: bool = False) -> str:
    hidden = "".join(f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">' for k, v in (fields or {}).items())
    return (f'<form class="action" data-action="/api/sessions/{esc(session_id)}/{name}" '
            f'data-confirm="{esc(confirm)}">{hidden}{inputs}'
            f'<button type="submit" name="{name}" class="{"danger" if danger else ""}">{esc(label)}</button></form>')


def _session_actions(s: SessionRecord) -> str:
    sid = s.session_id
    parts = []
    if not s.status.is_final:
        parts.append(_action("cancel", sid, "Cancel session", f"Cancel session {sid}? Running tasks are stopped.",
                             danger=True))
    if s.status is not SessionStatus.COMPLETED:
        parts.append(_action("resume", sid, "Resume (redrive)", f"Resume session {sid} in the dashboard's process?",
                             inputs='<label><input type="checkbox" name="force" value="1"> force</label>'))
    if s.needs_human:
        parts.append(_action("clear-needs-human", sid, "Clear needs-human",
                             f"Clear the needs-human flag of session {sid}?"))
    return '<div class="actions">' + "".join(parts) + "</div>"


def _header(view: SessionView, outcome: str | None) -> str:
    s = view.snapshot.session
    lease = (f"{esc(s.lease_owner)} until {fmt_time(s.lease_expires_at)}" if s.lease_owner else "none")
    facts = [("status", _status(s.status.value) + (' <span class="flag">needs-human</span>' if s.needs_human else "")),
             ("pipeline", f"{esc(s.pipeline)} v{esc(s.pipeline_version)}"),
             ("project", esc(s.project_id or "-")), ("user", esc(s.user_id or "-")),
             ("type", esc(s.pipeline_type or "-")),
             ("progress", _progress(s.progress.current, s.progress.total, s.progress.phase or "")),
             ("lease owner", lease), ("fence", str(s.fence)),
             ("redrives", f"{s.redrive_count}/{s.max_redrives}"),
             ("created", fmt_time(s.created_at)), ("updated", fmt_time(s.updated_at)),
             ("running", esc(", ".join(s.current_agents) or "-"))]
    facts += link_facts(view.snapshot)
    if s.reason:
        facts.append(("reason", esc(s.reason)))
    if s.needs_human_reason:
        facts.append(("needs-human", esc(s.needs_human_reason)))
    if s.cancel_requested and not s.status.is_final:
        facts.append(("cancel", "requested"))
    if outcome:
        facts.append(("dashboard", esc(outcome)))
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    return f'<dl class="facts" id="session-status" data-status="{s.status.value}">{dl}</dl>'


def _events(view: SessionView) -> str:
    if not view.events:
        return '<p class="muted">No events recorded yet.</p>'
    rows = "".join(
        f'<tr class="lvl-{esc(e.level)}"><td>{fmt_time(e.at)}</td><td>{esc(e.level)}</td><td>{esc(e.kind)}</td>'
        f"<td>{esc(e.task_id or '')}</td><td>{esc(e.message)}</td></tr>"
        for e in reversed(view.events))
    shown = len(view.events)
    note = (f"<p class=\"muted\">the latest {shown} of {view.events_total} events; all of them: "
            f"{cmd('orchestrator events ' + view.snapshot.session.session_id)}</p>"
            if view.events_total > shown else "")
    return (f'<table class="events"><thead><tr><th>at</th><th>level</th><th>kind</th><th>task</th><th>message</th>'
            f"</tr></thead><tbody>{rows}</tbody></table>{note}")


def session_live(view: SessionView, outcome: str | None, selected: str | None) -> str:
    """The live part of a session's page: facts, actions, the DAG and the events."""
    s = view.snapshot.session
    legend = "".join(f'<span class="pill s-{t.value}">{t.value.lower()}</span>' for t in TaskStatus)
    return (f"{_header(view, outcome)}{_session_actions(s)}"
            f'<section class="graph"><h2>Tasks <small>{len(view.snapshot.tasks)} · click a box for its detail · '
            f'dashed "+" boxes were added at run time</small></h2><div class="legend">{legend}</div>'
            f'<div class="dag-scroll">{dag_svg(view.layout, view.snapshot.tasks, selected)}</div></section>'
            f'<section class="history"><h2>Events</h2>{_events(view)}</section>')


def session_page(view: SessionView, outcome: str | None, fp: str) -> str:
    sid = view.snapshot.session.session_id
    return (f'<h1>Session <span class="sid">{esc(sid)}</span></h1>'
            f'<form id="find-task" class="tools"><input name="task" placeholder="find a task by id" size="22">'
            f'<button type="submit">Find</button><span class="zoom">zoom <button type="button" data-zoom="0.8">−'
            f'</button><span id="zoom-level">100%</span><button type="button" data-zoom="1.25">+</button>'
            f'<button type="button" data-zoom="0">reset</button></span></form>'
            f'<div class="session-grid"><div id="session-live" data-live="/fragments/sessions/{esc(sid)}" '
            f'data-fp="{fp}" data-session="{esc(sid)}">{session_live(view, outcome, None)}</div>'
            f'<aside id="task-panel" data-fp="">'
            f'<p class="muted">Select a task in the graph to see its attempts, output and actions.</p></aside></div>')


# -- one task -------------------------------------------------------------------------------------


def _json(value: Any) -> str:
    try:
        return json.dumps(value, indent=2, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return repr(value)


def _attempts(task: TaskRecord) -> str:
    if not task.history:
        return '<p class="muted">No attempt yet.</p>'
    items = []
    for a in sorted(task.history, key=lambda h: (h.attempt, h.fence)):
        took = fmt_ms((a.ended_at - a.started_at) * 1000) if a.started_at and a.ended_at else "-"
        error = ""
        if a.error is not None:
            tb = (f'<details class="traceback"><summary>traceback</summary><pre>{esc(a.error.traceback)}</pre>'
                  f"</details>" if a.error.traceback else "")
            error = (f'<div class="error"><b>{esc(a.error.type)}</b>: {esc(a.error.message)}'
                     f'{"" if a.error.retryable else " <i>(not retryable)</i>"}{tb}</div>')
        items.append(f'<li class="attempt" data-attempt="{a.attempt}" data-status="{a.status.value}">'
                     f"#{a.attempt} {_status(a.status.value)} fence {a.fence} · started {fmt_time(a.started_at)}"
                     f" · took {took}{error}</li>")
    return '<ol class="attempts">' + "".join(items) + "</ol>"


def _output(session_id: str, task: TaskRecord) -> str:
    if task.status is not TaskStatus.COMPLETED and task.output is None:
        return '<p class="muted">No output yet.</p>'
    text = _json(task.output)
    more = ""
    if len(text) > OUTPUT_PREVIEW:
        text = text[:OUTPUT_PREVIEW] + "\n…"
        more = " (truncated)"
    href = f"/sessions/{esc(session_id)}/tasks/{esc(task.task_id)}/output"
    return f'<pre class="output">{esc(text)}</pre><p><a href="{href}" download>download the output{more}</a></p>'


def task_panel(session: SessionRecord, task: TaskRecord, now: float) -> str:
    """A task's detail: state, attempts with errors, output, checkpoint, and its actions."""
    sid, tid = session.session_id, task.task_id
    p = task.progress
    took = fmt_ms(((task.ended_at or now) - task.started_at) * 1000) if task.started_at else "-"
    facts = [("status", _status(task.status.value)), ("agent", esc(task.agent)),
             ("attempts", f"{task.attempt} of {task.max_attempts} (this drive: {task.attempt - task.attempt_base})"),
             ("priority", f"P{task.priority}"), ("started", fmt_time(task.started_at)),
             ("ended", fmt_time(task.ended_at)), ("duration", took),
             ("progress", _progress(p.current, p.total, " / ".join(x for x in (p.phase, p.step) if x))
              if p.total else "-"),
             ("depends on", esc(", ".join(task.depends_on) or "-"))]
    if task.added_by:
        facts.append(("added by", esc(task.added_by)))
    if task.not_before and task.status is TaskStatus.PENDING:
        facts.append(("retry at", fmt_time(task.not_before)))
    if task.status is TaskStatus.WAITING:
        facts.append(("waits for", f'signal <code class="signal">{esc(task.waiting_for)}</code>' if task.waiting_for
                      else "a signal (its name is not recorded)"))
        facts.append(("until", fmt_time(task.not_before) if task.not_before else "no deadline"))
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    actions = []
    if task.status is TaskStatus.WAITING and not session.status.is_final:
        actions.append(_action("approve", sid, "Approve", f"Approve task {tid} of session {sid}?", {"task": tid},
                               '<input name="comment" placeholder="comment (optional)" size="18">'))
        actions.append(_action("reject", sid, "Reject", f"Reject task {tid} of session {sid}?", {"task": tid},
                               '<input name="reason" placeholder="reason" size="18">', danger=True))
    if task.status is not TaskStatus.COMPLETED and session.status not in (SessionStatus.COMPLETED,
                                                                          SessionStatus.CANCELLED):
        named = f' value="{esc(task.waiting_for)}"' if task.waiting_for else ""
        actions.append(_action("signal", sid, "Send signal", f"Send this signal to task {tid} of session {sid}?",
                               {"task": tid}, f'<input name="name" placeholder="signal name" size="12" required{named}>'
                               '<input name="data" placeholder="JSON payload, e.g. {&quot;ok&quot;: true}" size="22">'))
    actions.append(_action("fork", sid, "Fork from this task",
                           f"Create a new session that keeps the outputs upstream of {tid} and re-runs {tid} and "
                           f"everything after it?", {"task": tid}))
    checkpoint = (f'<pre class="checkpoint">{esc(_json(task.checkpoint)[:OUTPUT_PREVIEW])}</pre>'
                  if task.checkpoint is not None else '<p class="muted">No checkpoint saved.</p>')
    return (f'<div class="task-detail" data-task="{esc(tid)}" data-status="{task.status.value}">'
            f'<h2>Task <span class="tid">{esc(tid)}</span></h2><dl class="facts">{dl}</dl>'
            f'<div class="actions">{"".join(actions)}</div>'
            f"<h3>Attempts</h3>{_attempts(task)}<h3>Output</h3>{_output(sid, task)}"
            f"<h3>Checkpoint</h3>{checkpoint}</div>")
