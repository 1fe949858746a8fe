"""The dashboard's web application: routes, the store it reads, errors as pages, and `serve`.

Starlette on uvicorn: Starlette is built on anyio, like the SDK, so the store's async
API is awaited directly in the request handlers, and a resume started from the page
runs in the server's own anyio task group.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import webbrowser
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from orchestrator.cli._common import EXIT_CONFLICT, EXIT_NOT_FOUND, EXIT_STORE, EXIT_USAGE, exit_code_for, jsonable
from orchestrator.errors import ConfigError, OrchestratorError
from orchestrator.graph import Pipeline
from orchestrator.store import Store, StoreConfig, open_store
from orchestrator.ui.actions import Actions
from orchestrator.ui.html import cmd, esc, frame, message
from orchestrator.ui.metrics_page import metrics_page
from orchestrator.ui.pages import session_live, session_page, sessions_page, sessions_rows, task_panel
from orchestrator.ui.queries import (
    SessionFilter,
    fingerprint,
    list_sessions,
    load_metrics,
    load_session_view,
    parse_day,
)
from orchestrator.ui.security import ACCESS_COOKIE, Guard, check_bind, is_loopback, new_token

__all__ = ["Settings", "create_app", "serve"]

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
_FP_HEADER = "x-live-fingerprint"
_STATUS_OF_EXIT = {EXIT_USAGE: 400, EXIT_NOT_FOUND: 404, EXIT_CONFLICT: 409, EXIT_STORE: 503}


@dataclass(frozen=True)
class Settings:
    """What `orchestrator ui` was started with."""

    store: StoreConfig
    store_url: str  # as the user wrote it (or the default's URL), for the commands the pages suggest
    host: str = "127.0.0.1"
    port: int = 8765
    access_token: str | None = None
    pipelines: Mapping[str, Pipeline] = field(default_factory=dict)
    open_browser: bool = False
    csrf_token: str = field(default_factory=new_token)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "[::]") else host
        return f"http://{shown}:{self.port}/" + (f"?token={self.access_token}" if self.access_token else "")


class _Backend:
    """The store, opened on first use and reopened after a failed open; resumes run in `tg`."""

    def __init__(self, settings: Settings, tg: anyio.abc.TaskGroup) -> None:
        self.settings = settings
        self._store: Store | None = None
        self._lock = anyio.Lock()
        self._tg = tg
        self._actions: Actions | None = None

    async def store(self) -> Store:
        async with self._lock:
            if self._store is None:
                store = open_store(self.settings.store)
                try:
                    # A SQLite file is created, as any command would; a DynamoDB table never is
                    # from a dashboard (a mistyped name must not become a new table).
                    if self.settings.store.sqlite is not None:
                        await store.initialize()
                except BaseException:
                    with anyio.CancelScope(shield=True):
                        await store.aclose()
                    raise
                self._store = store
            return self._store

    async def actions(self) -> Actions:
        store = await self.store()
        if self._actions is None:
            self._actions = Actions(store, self.settings.pipelines, self._spawn)
        return self._actions

    def outcome(self, session_id: str) -> str | None:
        return self._actions.outcomes.get(session_id) if self._actions else None

    def _spawn(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._tg.start_soon(fn)

    async def aclose(self) -> None:
        if self._store is not None:
            await self._store.aclose()


def _backend(request: Request) -> _Backend:
    backend: _Backend = request.app.state.backend
    return backend


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _page(request: Request, title: str, body: str, active: str, status: int = 200) -> HTMLResponse:
    s = _settings(request)
    return HTMLResponse(frame(title, body, csrf=s.csrf_token, active=active, store=s.store_url), status_code=status)


def _error_body(exc: OrchestratorError, store_url: str) -> tuple[int, str]:
    status = _STATUS_OF_EXIT.get(exit_code_for(exc), 500)
    if status == 503:
        return status, message("error", "The store cannot be reached",
                               f'<pre class="error-text">{esc(exc)}</pre><p>Check the store and its settings with '
                               f"{cmd(f'orchestrator --store {store_url} doctor')}, then reload this page.</p>")
    if status == 404:
        return status, message("error", "Not found", f'<p>{esc(exc)}</p><p><a href="/">Back to the sessions</a></p>')
    return status, message("error", "That did not work", f'<pre class="error-text">{esc(exc)}</pre>')


Handler = Callable[[Request], Awaitable[Response]]


def _guarded(kind: str, title: str, active: str) -> Callable[[Handler], Handler]:
    """Render an operational error as a page, a fragment or JSON, with what to do about it."""
    def wrap(fn: Handler) -> Handler:
        async def handler(request: Request) -> Response:
            try:
                return await fn(request)
            except OrchestratorError as exc:
                status, body = _error_body(exc, _settings(request).store_url)
                if kind == "json":
                    return JSONResponse({"ok": False, "error": str(exc)}, status_code=status)
                if kind == "fragment":
                    return HTMLResponse(body, status_code=status, headers={"x-fingerprint": "error"})
                return _page(request, title, body, active, status)
        return handler
    return wrap


def _live(request: Request, fp: str, body: Callable[[], str]) -> Response:
    if request.headers.get(_FP_HEADER) == fp:
        return Response(status_code=204, headers={"x-fingerprint": fp})
    return HTMLResponse(body(), headers={"x-fingerprint": fp})


def _list_fp(page: Any) -> str:
    return fingerprint([(s.session_id, s.status.value, s.updated_at, s.needs_human) for s in page.items], page.cursor)


@_guarded("page", "Sessions", "sessions")
async def sessions(request: Request) -> Response:
    f = SessionFilter.from_query(request.query_params)
    page = await list_sessions(await _backend(request).store(), f)
    return _page(request, "Sessions", sessions_page(page, f, _settings(request).store_url, _list_fp(page)), "sessions")


@_guarded("fragment", "Sessions", "sessions")
async def sessions_fragment(request: Request) -> Response:
    f = SessionFilter.from_query(request.query_params)
    page = await list_sessions(await _backend(request).store(), f)
    return _live(request, _list_fp(page), lambda: sessions_rows(page, f, _settings(request).store_url))


@_guarded("page", "Session", "sessions")
async def session(request: Request) -> Response:
    backend = _backend(request)
    sid = request.path_params["session_id"]
    view = await load_session_view(await backend.store(), sid)
    outcome = backend.outcome(sid)
    return _page(request, f"Session {sid}", session_page(view, outcome, fingerprint(view.fingerprint, outcome)),
                 "sessions")


@_guarded("fragment", "Session", "sessions")
async def session_fragment(request: Request) -> Response:
    backend = _backend(request)
    sid = request.path_params["session_id"]
    view = await load_session_view(await backend.store(), sid)
    outcome = backend.outcome(sid)
    selected = request.query_params.get("task")
    return _live(request, fingerprint(view.fingerprint, outcome, selected),
                 lambda: session_live(view, outcome, selected))


@_guarded("fragment", "Task", "sessions")
async def task_fragment(request: Request) -> Response:
    store = await _backend(request).store()
    s = await store.get_session(request.path_params["session_id"])
    task = await store.get_task(s.session_id, request.path_params["task_id"])
    fp = fingerprint(task.status.value, task.updated_at, task.attempt, task.progress, s.status.value, s.updated_at)
    return _live(request, fp, lambda: task_panel(s, task, store.clock.now()))


@_guarded("page", "Task output", "sessions")
async def task_output(request: Request) -> Response:
    store = await _backend(request).store()
    sid, tid = request.path_params["session_id"], request.path_params["task_id"]
    task = await store.get_task(sid, tid)
    body = json.dumps(jsonable(task.output), indent=2, sort_keys=True, default=str)
    name = re.sub(r"[^A-Za-z0-9._-]", "_", f"{sid}-{tid}-output.json")
    return Response(body, media_type="application/json",
                    headers={"content-disposition": f'attachment; filename="{name}"'})


@_guarded("page", "Metrics", "metrics")
async def metrics(request: Request) -> Response:
    store = await _backend(request).store()
    view = await load_metrics(store, parse_day(request.query_params.get("day"), store.clock.now()))
    return _page(request, "Metrics", metrics_page(view, _settings(request).store_url), "metrics")


@_guarded("json", "Action", "sessions")
async def action(request: Request) -> Response:
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return JSONResponse({"ok": False, "error": "the request body must be a JSON object"}, status_code=400)
    actions = await _backend(request).actions()
    result = await actions.run(request.path_params["action"], request.path_params["session_id"], body)
    return JSONResponse({"ok": True, "message": result.message, **jsonable(dict(result.data))})


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


class _GuardMiddleware(BaseHTTPMiddleware):
    """Host check, access token, and the cross-site rules of every POST (see `security`)."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        guard: Guard = request.app.state.guard
        refusal = guard.host_refusal(request.headers.get("host"))
        if refusal is not None:
            return PlainTextResponse(refusal, status_code=421)
        if request.url.path == "/healthz":  # says only that the server is up: for probes, without the token
            return await call_next(request)
        query_token = request.query_params.get("token")
        if not guard.has_access(request.headers, request.cookies, query_token):
            return PlainTextResponse("this dashboard needs its access token: open the URL `orchestrator ui` printed "
                                     "(with ?token=...), or send Authorization: Bearer TOKEN", status_code=401)
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            own = f"{request.url.scheme}://{request.headers.get('host', '')}"
            refusal = guard.post_refusal(request.headers, own)
            if refusal is not None:
                return JSONResponse({"ok": False, "error": refusal}, status_code=403)
        if (query_token is not None and guard.access_token is not None and request.method == "GET"
                and guard.has_access({}, {}, query_token)):
            response: Response = RedirectResponse(request.url.remove_query_params("token"), status_code=303)
            response.set_cookie(ACCESS_COOKIE, query_token, httponly=True, samesite="strict")
            return response
        response = await call_next(request)
        response.headers.setdefault("x-content-type-options", "nosniff")
        response.headers.setdefault("x-frame-options", "DENY")
        response.headers.setdefault("referrer-policy", "no-referrer")
        return response


def create_app(settings: Settings) -> Starlette:
    """The dashboard over `settings.store` (opened on the first request, closed at shutdown)."""
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            backend = _Backend(settings, tg)
            app.state.backend = backend
            if settings.open_browser:
                async def browse() -> None:
                    await anyio.to_thread.run_sync(webbrowser.open, settings.url)

                tg.start_soon(browse)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()
                with anyio.CancelScope(shield=True):
                    await backend.aclose()

    app = Starlette(
        routes=[
            Route("/", sessions),
            Route("/fragments/sessions", sessions_fragment),
            Route("/sessions/{session_id}", session),
            Route("/fragments/sessions/{session_id}", session_fragment),
            Route("/fragments/sessions/{session_id}/tasks/{task_id}", task_fragment),
            Route("/sessions/{session_id}/tasks/{task_id}/output", task_output),
            Route("/metrics", metrics),
            Route("/api/sessions/{session_id}/{action}", action, methods=["POST"]),
            Route("/healthz", health),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        middleware=[Middleware(_GuardMiddleware)],
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.guard = Guard(settings.csrf_token, settings.access_token, loopback_only=is_loopback(settings.host))
    return app


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so a taken port is one clear error, not a server log line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc}): another program may use the "
                          f"port; choose another with --port") from None
    sock.set_inheritable(True)
    return sock


def _say(line: str) -> None:
    print(line, flush=True)


def serve(settings: Settings, *, announce: Callable[[str], None] = _say) -> None:
    """Run the dashboard until interrupted; refuses a non-loopback address without a token."""
    check_bind(settings.host, settings.access_token)
    sock = _bind(settings.host, settings.port)
    announce(f"orchestrator ui: {settings.url} (store: {settings.store_url}; Ctrl-C to stop)")
    config = uvicorn.Config(create_app(settings), host=settings.host, port=settings.port, log_level="warning",
                            lifespan="on", access_log=False)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
