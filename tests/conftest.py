"""Shared fixtures: every Store backend the suite runs against, and the tools around them.

Fixtures (use these names in any test module):

- `anyio_backend`: "asyncio" (for `@pytest.mark.anyio` tests).
- `fake_clock`: the `FakeClock` the `store` fixture was opened with.
- `store`: an initialized store, parametrized over the backends below, with a fresh
  file or table per test; closed (and the moto server reset) afterwards.
- `store_url`: the URL that opens the same store in a child process; None for
  in-process moto, whose state lives only in this process.
- `store_backend`: the backend id of the current parameter (see BACKENDS).
- `moto_endpoint`: the URL of the session-wide moto server (one request at a time),
  started on first use and stopped at the end of the session.
- `moto_upstream`: the same URL, with the server reset after the test (for a test that
  puts a `FaultProxy` in front of it and creates tables through the proxy).
- `dynalite_endpoint`: the URL of the session-wide dynalite server, likewise; started
  again if it died between tests, the death named in the run's summary.
- `drop_dynalite_table`: deletes a table of that server (tests make one per test).

Backends (ids): `sqlite` (a real file in tmp_path), `moto` (in-process `mock_aws()`),
`moto-server` (HTTP, one request at a time), `moto-notx` and `moto-server-notx`
(DynamoDB with `transactions=0`: single-item conditional writes only), `dynalite` (an
independent DynamoDB implementation on Node.js, concurrent, with DynamoDB's real size
limits; it has no transactions, so always `transactions=0`). Restrict a test or class
with `@pytest.mark.backends("sqlite", "moto-server")`; skip it on one backend, where
that backend genuinely lacks a feature, with `@pytest.mark.backend_limit("dynalite",
"the limit, named")`.

The Store contract suite (`orchestrator/testing/contract*.py`) runs from the
`tests/test_contract_*.py` files, its classes grouped so that each file takes about the
same time: `make test` runs a file per process (pytest-xdist `--dist loadfile`), and one
file of them all was the run's long tail. Single-process behaviour runs on all six
backends; contention, several processes and crashes only on SHARED_BACKENDS (in-process
moto is not atomic under concurrent requests and shares nothing between processes);
lost responses and request counting on the DynamoDB backends (botocore's event hooks).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.store import Store, open_store
from orchestrator.testing import FakeClock
from orchestrator.testing.dynalite import DynaliteServer
from orchestrator.testing.moto_server import MotoServer

BACKENDS: tuple[str, ...] = ("sqlite", "moto", "moto-server", "moto-notx", "moto-server-notx", "dynalite")
#: Backends whose state several processes and threads share atomically.
SHARED_BACKENDS: tuple[str, ...] = ("sqlite", "moto-server", "moto-server-notx", "dynalite")
#: The DynamoDB backends.
DYNAMODB_BACKENDS: tuple[str, ...] = ("moto", "moto-server", "moto-notx", "moto-server-notx", "dynalite")
#: Where `make test` installs dynalite (`npm ci --prefix tests/dynalite`).
DYNALITE_MODULE = Path(__file__).resolve().parent / "dynalite" / "node_modules" / "dynalite"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "backends(*ids): run a test using `store` only on these backends (see conftest)"
    )
    config.addinivalue_line(
        "markers", "backend_limit(id, reason): skip a test using `store` on that backend, which lacks a feature"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_backend" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("backends")
    ids = tuple(marker.args) if marker is not None else BACKENDS
    unknown = sorted(set(ids) - set(BACKENDS))
    if unknown:
        raise pytest.UsageError(f"unknown backend(s) {unknown} in @pytest.mark.backends; known: {BACKENDS}")
    limits = {m.args[0]: m.args[1] for m in metafunc.definition.iter_markers("backend_limit")}
    unknown = sorted(set(limits) - set(BACKENDS))
    if unknown:
        raise pytest.UsageError(f"unknown backend(s) {unknown} in @pytest.mark.backend_limit; known: {BACKENDS}")
    params = [pytest.param(i, id=i, marks=pytest.mark.skip(reason=limits[i])) if i in limits else i for i in ids]
    metafunc.parametrize("store_backend", params, ids=list(ids), scope="function")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _fake_aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto accepts any keys; never let a test reach real AWS with real ones."""
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_SECURITY_TOKEN", "testing"),
        ("AWS_SESSION_TOKEN", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture(scope="session")
def _moto_server() -> Iterator[MotoServer]:
    server = MotoServer.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def moto_endpoint(_moto_server: MotoServer) -> str:
    """Endpoint of the shared one-request-at-a-time moto server."""
    return _moto_server.endpoint


class _SharedDynalite:
    """The test session's dynalite server, started again if it died between tests.

    dynalite is a third-party test double; if its process dies, the test running at that
    moment fails on its own, and every later dynalite test would fail on "connection
    refused" with no word of why. So the next test gets a new server, and the death (exit
    code and stderr) is attached to that test's report and printed in the run's summary
    (`pytest_terminal_summary`).
    """

    def __init__(self) -> None:
        self.server = DynaliteServer.start(DYNALITE_MODULE)

    def endpoint(self, node: pytest.Item) -> str:
        report = self.server.exit_report()
        if report is not None:
            node.user_properties.append((_DYNALITE_DIED, report))
            self.server.stop()
            self.server = DynaliteServer.start(DYNALITE_MODULE)
        return self.server.endpoint


_DYNALITE_DIED = "dynalite died before this test"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Name every death of the shared dynalite server (see `_SharedDynalite`)."""
    for reports in terminalreporter.stats.values():
        for report in reports:
            for key, value in getattr(report, "user_properties", ()):
                if key == _DYNALITE_DIED and getattr(report, "when", "") == "setup":
                    terminalreporter.write_line(f"{_DYNALITE_DIED} {report.nodeid} (restarted): {value}",
                                                red=True)


@pytest.fixture(scope="session")
def _dynalite() -> Iterator[_SharedDynalite]:
    if not (DYNALITE_MODULE / "package.json").is_file():
        pytest.fail(f"dynalite is not installed at {DYNALITE_MODULE}: run `make test`, or "
                    f"`npm ci --prefix tests/dynalite --ignore-scripts` (needs Node.js 18+ with npm)")
    shared = _SharedDynalite()
    try:
        yield shared
    finally:
        shared.server.stop()


@pytest.fixture
def dynalite_endpoint(_dynalite: _SharedDynalite, request: pytest.FixtureRequest) -> str:
    """Endpoint of the shared dynalite server (in memory; tests use a fresh table each)."""
    return _dynalite.endpoint(request.node)


@pytest.fixture
def drop_dynalite_table(dynalite_endpoint: str) -> Iterator[Callable[[str], None]]:
    """Delete a table of the dynalite server, so its memory does not grow over the session."""
    import boto3

    client = boto3.client("dynamodb", endpoint_url=dynalite_endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")

    def drop(table: str) -> None:
        try:
            client.delete_table(TableName=table)
        except client.exceptions.ResourceNotFoundException:
            pass

    try:
        yield drop
    finally:
        client.close()


@pytest.fixture
def moto_upstream(_moto_server: MotoServer) -> Iterator[str]:
    """The session-wide moto server's URL; every table is dropped after the test."""
    try:
        yield _moto_server.endpoint
    finally:
        _moto_server.reset()


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store_url(store_backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str | None:
    """URL of this test's store for child processes; None for in-process moto."""
    table = f"t-{uuid.uuid4().hex[:12]}"
    if store_backend == "sqlite":
        return f"sqlite://{tmp_path / 'state.db'}"
    if store_backend in ("moto", "moto-notx"):
        return None
    if store_backend == "dynalite":
        return f"dynamodb://{table}?region=us-east-1&endpoint={request.getfixturevalue('dynalite_endpoint')}" \
               "&transactions=0"
    endpoint = request.getfixturevalue("moto_endpoint")
    tx = "&transactions=0" if store_backend.endswith("-notx") else ""
    return f"dynamodb://{table}?region=us-east-1&endpoint={endpoint}{tx}"


@pytest.fixture
async def store(
    store_backend: str, store_url: str | None, fake_clock: FakeClock, request: pytest.FixtureRequest
) -> AsyncIterator[Store]:
    """An initialized store on a fresh file/table, driven by `fake_clock`."""
    mock: Any = None
    server: MotoServer | None = None
    drop: Callable[[str], None] | None = None
    if store_backend.startswith("moto-server"):
        server = request.getfixturevalue("_moto_server")
    if store_backend == "dynalite":
        drop = request.getfixturevalue("drop_dynalite_table")
    if store_url is None:
        from moto import mock_aws

        mock = mock_aws()
        mock.start()
        tx = "&transactions=0" if store_backend.endswith("-notx") else ""
        # In-process moto is not thread-safe (a transaction deep-copies the table while
        # another thread writes it), so one request at a time.
        url = f"dynamodb://t-{uuid.uuid4().hex[:12]}?region=us-east-1&connections=1{tx}"
    else:
        url = store_url
    opened = open_store(url, clock=fake_clock)
    try:
        await opened.initialize()
        yield opened
    finally:
        await opened.aclose()
        if mock is not None:
            mock.stop()
        if server is not None:
            server.reset()
        if drop is not None:
            drop(opened.describe().location)
