"""Who may use the dashboard, and which requests may change state: pure rules.

Loopback binding is the default and needs no token (only this machine's users reach
it). Any other address needs an access token, given once as `?token=` (then kept in
an HttpOnly cookie) or as `Authorization: Bearer`. Every POST must come from the
dashboard's own pages: it carries the per-server CSRF token in a header (a cross-site
form cannot set headers; a cross-site fetch with one needs a CORS preflight, never
granted), and its Origin / Sec-Fetch-Site, when the browser sends them, must say
same-origin. The Host header of a loopback server must name a loopback host, so a
DNS-rebinding page cannot talk to it under its own name.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from orchestrator.errors import ConfigError

__all__ = [
    "ACCESS_COOKIE",
    "CSRF_HEADER",
    "TOKEN_ENV",
    "Guard",
    "check_bind",
    "is_loopback",
    "new_token",
]

TOKEN_ENV = "ORCHESTRATOR_UI_TOKEN"
CSRF_HEADER = "x-orchestrator-csrf"
ACCESS_COOKIE = "orchestrator_ui_token"
_LOOPBACK_NAMES = ("localhost",)


def new_token() -> str:
    return secrets.token_urlsafe(24)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and `localhost` (brackets and a port are allowed: a Host header)."""
    name = _host_name(host)
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _host_name(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8765
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:  # name:port; a bare IPv6 address has several colons
        return host.split(":", 1)[0]
    return host


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve a non-loopback address without an access token (ConfigError, exit 2)."""
    if not host.strip():
        raise ConfigError("--host is empty: give an address to listen on, e.g. --host 127.0.0.1")
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"--host {host} would expose the dashboard beyond this machine without a token: set "
            f"{TOKEN_ENV} (or pass --token) to require one, or listen on 127.0.0.1")


def _same(a: str | None, b: str) -> bool:
    return a is not None and hmac.compare_digest(a.encode(), b.encode())


@dataclass(frozen=True, slots=True)
class Guard:
    """The rules of one running server: its CSRF token, and its access token when it has one."""

    csrf_token: str
    access_token: str | None = None
    loopback_only: bool = True  # a loopback bind: Host must be a loopback name

    def host_refusal(self, host_header: str | None) -> str | None:
        """Why a request's Host is refused (DNS rebinding), or None."""
        if not self.loopback_only:
            return None
        if not host_header or not is_loopback(host_header):
            return (f"Host {host_header!r} is not this machine: the dashboard listens on a loopback address; "
                    f"open it as http://127.0.0.1:PORT/")
        return None

    def has_access(self, headers: Mapping[str, str], cookies: Mapping[str, str], query_token: str | None) -> bool:
        """Without an access token everything may read; with one, a matching token must come along."""
        if self.access_token is None:
            return True
        bearer = headers.get("authorization", "")
        given = bearer[7:].strip() if bearer.lower().startswith("bearer ") else None
        return any(_same(t, self.access_token) for t in (given, cookies.get(ACCESS_COOKIE), query_token))

    def post_refusal(self, headers: Mapping[str, str], own_origin: str) -> str | None:
        """Why a state-changing request is refused as cross-site, or None when it is the dashboard's own."""
        site = headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return f"cross-site request refused (Sec-Fetch-Site: {site})"
        origin = headers.get("origin")
        if origin is not None and origin.rstrip("/").lower() != own_origin.rstrip("/").lower():
            return f"cross-origin request refused (Origin {origin} is not {own_origin})"
        if not _same(headers.get(CSRF_HEADER), self.csrf_token):
            return (f"missing or wrong {CSRF_HEADER} header: actions are accepted only from the dashboard's own "
                    f"pages; reload the page")
        return None
