"""`orchestrator ui`: start the web dashboard (the optional `ui` extra, imported lazily).

Without the extra installed, one `error:` line says which pip command adds it (exit 2),
as does a non-loopback `--host` without an access token.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from orchestrator.apps import load_pipelines
from orchestrator.cli._common import globals_of, store_config
from orchestrator.errors import ConfigError

__all__ = ["register"]

EXTRA = "pip install 'durable-orchestrator[ui]'"


def ui_cmd(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Address to listen on; anything but loopback needs a "
                                      "token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 8765,
    open_browser: Annotated[bool, typer.Option("--open", help="Open the dashboard in a browser.")] = False,
    token: Annotated[str | None, typer.Option("--token", help="Access token (default: $ORCHESTRATOR_UI_TOKEN); "
                                              "required with a non-loopback --host.")] = None,
    apps: Annotated[list[str] | None, typer.Option("--app", "-a", help="APP:PIPELINE the Resume button may run "
                                                   "here (repeat, or comma-separate).")] = None,
) -> None:
    """A local web dashboard: sessions, the live DAG, task detail, approvals and metrics."""
    try:
        from orchestrator.ui import Settings, serve
    except ImportError as exc:
        raise ConfigError(f"`orchestrator ui` needs the ui extra ({exc.name or exc} is not installed): {EXTRA}") \
            from None
    g = globals_of(ctx)
    config = store_config(g)
    pipelines = {p.name: p for p in load_pipelines(apps)} if apps else {}
    settings = Settings(store=config, store_url=g.store or config.url, host=host, port=port,
                        access_token=token or os.environ.get("ORCHESTRATOR_UI_TOKEN") or None,
                        pipelines=pipelines, open_browser=open_browser)
    serve(settings)


def register(app: typer.Typer) -> None:
    app.command("ui")(ui_cmd)
