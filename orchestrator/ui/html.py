"""The page frame and small formatting helpers shared by every view (plain strings, escaped)."""

from __future__ import annotations

import html
from datetime import UTC, datetime

__all__ = ["cmd", "esc", "fmt_age", "fmt_ms", "fmt_time", "frame", "message"]


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def fmt_time(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def fmt_age(seconds: float) -> str:
    """`42s`, `5m`, `3h`, `2d`: how long ago, coarse."""
    s = max(0.0, seconds)
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if s >= size:
            return f"{int(s // size)}{unit}"
    return f"{int(s)}s"


def fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms / 1000:.1f}s" if ms >= 1000 else f"{ms:.0f}ms"


def cmd(text: str) -> str:
    """A command a person can copy."""
    return f'<code class="cmd">{esc(text)}</code>'


def message(kind: str, title: str, body_html: str) -> str:
    """An empty, loading or error state: what happened and what to do (`kind`: empty, error, info)."""
    return f'<div class="state state-{esc(kind)}" data-state="{esc(kind)}"><h2>{esc(title)}</h2>{body_html}</div>'


def frame(title: str, body: str, *, csrf: str, active: str, store: str) -> str:
    """A whole page: head, navigation, the body, the confirmation dialog and the result area."""
    nav = "".join(
        f'<a href="{href}" class="{"active" if key == active else ""}">{label}</a>'
        for key, href, label in (("sessions", "/", "Sessions"), ("metrics", "/metrics", "Metrics"))
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="{esc(csrf)}">
<title>{esc(title)} · orchestrator</title>
<link rel="stylesheet" href="/static/ui.css">
<script src="/static/ui.js" defer></script>
</head><body>
<header class="top"><a class="brand" href="/">orchestrator</a><nav>{nav}</nav>
<span class="store" title="store">{esc(store)}</span>
<span id="live-status" class="live-status" aria-live="polite"></span></header>
<main>
<div id="result" class="result" role="status" aria-live="polite" hidden></div>
{body}
</main>
<dialog id="confirm"><form method="dialog"><p id="confirm-text"></p>
<menu><button value="cancel" id="confirm-cancel">Cancel</button>
<button value="ok" id="confirm-ok" class="primary">Confirm</button></menu></form></dialog>
</body></html>"""
