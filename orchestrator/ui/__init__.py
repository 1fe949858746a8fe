"""`orchestrator ui`: a local web dashboard over a store (the optional `ui` extra).

Only this package imports starlette and uvicorn; the command line imports it lazily,
so the core install does not need them. Modules: `app` (routes, serving), `pages` and
`metrics_page` (the HTML), `dag_svg` with `layout` (the DAG picture, laid out by a pure
function), `queries` (what pages read), `actions` (the buttons), `security`.
"""

from __future__ import annotations

from orchestrator.ui.app import Settings, create_app, serve

__all__ = ["Settings", "create_app", "serve"]
