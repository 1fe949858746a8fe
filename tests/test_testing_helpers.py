"""The test helpers shipped in `orchestrator.testing`: temporary_store, the moto and dynalite servers."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import EndpointConnectionError
from conftest import DYNALITE_MODULE

from orchestrator.clock import Clock, SystemClock
from orchestrator.store import NewSession, NewTask, SessionStatus
from orchestrator.testing import FakeClock, temporary_store
from orchestrator.testing._workers import child_env
from orchestrator.testing.dynalite import DynaliteServer, dynalite_server
from orchestrator.testing.moto_server import moto_server, reset_moto

pytestmark = pytest.mark.anyio


async def test_temporary_store_is_a_working_sqlite_store_removed_afterwards() -> None:
    clock = FakeClock()
    async with temporary_store(clock=clock) as store:
        created = await store.create_session(NewSession("s1", "p"), [NewTask("a", "agent")])
        assert (created.status, created.created_at) == (SessionStatus.PENDING, clock.now())
        location = store.describe().location
    assert not Path(location).parent.exists()


def test_fake_clock_monotonic_reading_moves_only_when_the_test_moves_time() -> None:
    clock = FakeClock(100.0)
    first = clock.monotonic()
    assert clock.monotonic() == first
    clock.advance(2.5)
    assert clock.monotonic() - first == 2.5


def test_system_clock_monotonic_reading_never_goes_back() -> None:
    clock = SystemClock()
    readings = [clock.monotonic() for _ in range(100)]
    assert readings == sorted(readings)
    assert isinstance(clock, Clock) and isinstance(FakeClock(), Clock)


@pytest.mark.slow
def test_moto_server_serves_dynamodb_resets_and_stops(moto_endpoint: str) -> None:
    with moto_server() as endpoint:
        assert endpoint != moto_endpoint and endpoint.startswith("http://127.0.0.1:")
        client = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
        client.create_table(
            TableName="t1", KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "PK", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST",
        )
        assert client.list_tables()["TableNames"] == ["t1"]
        reset_moto(endpoint)
        assert client.list_tables()["TableNames"] == []
    stopped = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1",
                           config=Config(retries={"max_attempts": 1}))
    with pytest.raises(EndpointConnectionError):
        stopped.list_tables()


def _refuses(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/", timeout=2):
            return False
    except (urllib.error.URLError, OSError):
        return True


@pytest.mark.slow
def test_dynalite_server_serves_dynamodb_on_its_own_port_and_stops(dynalite_endpoint: str) -> None:
    with dynalite_server(DYNALITE_MODULE) as endpoint:
        assert endpoint != dynalite_endpoint and endpoint.startswith("http://127.0.0.1:")
        client = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
        client.create_table(
            TableName="tbl-1", KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "PK", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST",
        )
        assert client.list_tables()["TableNames"] == ["tbl-1"]
        client.close()
    assert _refuses(endpoint)


@pytest.mark.slow
def test_dynalite_server_reports_how_it_died_with_its_exit_code() -> None:
    server = DynaliteServer.start(DYNALITE_MODULE)
    try:
        assert server.exit_report() is None
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(timeout=10)
        assert server.exit_report() == f"dynalite exited with code {-signal.SIGKILL}: ''"
    finally:
        server.stop()


@pytest.mark.slow
def test_dynalite_server_reports_that_its_stdin_was_closed() -> None:
    server = DynaliteServer.start(DYNALITE_MODULE)
    try:
        assert server.process.stdin is not None
        server.process.stdin.close()
        server.process.wait(timeout=10)
        assert server.exit_report() == ("dynalite exited with code 0: "
                                        "'dynalite: its stdin was closed (its parent exited or closed the pipe)'")
    finally:
        server.stop()


def test_dynalite_server_not_installed_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"dynalite is not installed at .*npm ci --prefix"):
        DynaliteServer.start(tmp_path / "node_modules" / "dynalite")


@pytest.mark.slow
def test_dynalite_server_exits_when_the_process_that_started_it_is_killed(tmp_path: Path) -> None:
    code = (f"from pathlib import Path; from orchestrator.testing.dynalite import DynaliteServer; "
            f"s = DynaliteServer.start(Path({str(DYNALITE_MODULE)!r})); print(s.endpoint, flush=True); "
            f"import time; time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=child_env())
    try:
        assert parent.stdout is not None
        endpoint = parent.stdout.readline().strip()
        assert endpoint.startswith("http://127.0.0.1:") and not _refuses(endpoint)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        if parent.stdout is not None:
            parent.stdout.close()
    deadline = time.monotonic() + 10.0
    while not _refuses(endpoint):
        assert time.monotonic() < deadline, f"dynalite at {endpoint} still serving 10 s after its parent died"
        time.sleep(0.05)
