"""Who may use the dashboard and which requests may change state (the pure rules)."""

from __future__ import annotations

import pytest

from orchestrator.errors import ConfigError
from orchestrator.ui.security import ACCESS_COOKIE, CSRF_HEADER, Guard, check_bind, is_loopback

OWN = "http://127.0.0.1:8765"
GUARD = Guard("csrf-1")


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.1:8765", True), ("127.1.2.3", True), ("localhost", True),
    ("localhost:8765", True), ("::1", True), ("[::1]:8765", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.5", False), ("dash.example", False), ("", False),
])
def test_loopback_addresses_are_recognised(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_loopback_bind_needs_no_token() -> None:
    check_bind("127.0.0.1", None)


def test_any_other_bind_without_a_token_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="ORCHESTRATOR_UI_TOKEN"):
        check_bind("0.0.0.0", None)


def test_any_other_bind_with_a_token_is_allowed() -> None:
    check_bind("0.0.0.0", "s3cret")


def test_a_post_from_the_dashboard_itself_is_accepted() -> None:
    headers = {"origin": OWN, "sec-fetch-site": "same-origin", CSRF_HEADER: "csrf-1"}
    assert GUARD.post_refusal(headers, OWN) is None


def test_a_post_from_another_origin_is_refused() -> None:
    headers = {"origin": "http://evil.example", CSRF_HEADER: "csrf-1"}
    assert "cross-origin" in (GUARD.post_refusal(headers, OWN) or "")


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
def test_a_post_the_browser_marks_as_not_same_origin_is_refused(site: str) -> None:
    headers = {"sec-fetch-site": site, CSRF_HEADER: "csrf-1"}
    assert site in (GUARD.post_refusal(headers, OWN) or "")


@pytest.mark.parametrize("token", [None, "", "csrf-2"])
def test_a_post_without_the_servers_csrf_token_is_refused(token: str | None) -> None:
    headers = {"origin": OWN} | ({CSRF_HEADER: token} if token is not None else {})
    assert CSRF_HEADER in (GUARD.post_refusal(headers, OWN) or "")


def test_a_loopback_server_refuses_a_foreign_host_name() -> None:
    assert GUARD.host_refusal("rebound.example:8765") is not None
    assert GUARD.host_refusal(None) is not None
    assert GUARD.host_refusal("127.0.0.1:8765") is None and GUARD.host_refusal("localhost:8765") is None


def test_a_server_bound_elsewhere_accepts_any_host_name() -> None:
    assert Guard("c", "t", loopback_only=False).host_refusal("dash.example") is None


def test_without_an_access_token_everyone_may_read() -> None:
    assert GUARD.has_access({}, {}, None)


@pytest.mark.parametrize(("headers", "cookies", "query"), [
    ({"authorization": "Bearer s3cret"}, {}, None),
    ({}, {ACCESS_COOKIE: "s3cret"}, None),
    ({}, {}, "s3cret"),
])
def test_with_an_access_token_the_matching_token_lets_in(headers: dict[str, str], cookies: dict[str, str],
                                                        query: str | None) -> None:
    assert Guard("c", "s3cret").has_access(headers, cookies, query)


@pytest.mark.parametrize(("headers", "cookies", "query"), [
    ({}, {}, None),
    ({"authorization": "Bearer wrong"}, {}, None),
    ({"authorization": "s3cret"}, {}, None),
    ({}, {ACCESS_COOKIE: "wrong"}, "also-wrong"),
])
def test_with_an_access_token_a_missing_or_wrong_token_is_refused(headers: dict[str, str],
                                                                  cookies: dict[str, str], query: str | None) -> None:
    assert not Guard("c", "s3cret").has_access(headers, cookies, query)
