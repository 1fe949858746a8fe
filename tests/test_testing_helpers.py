"""The test helpers shipped in `orchestrator.testing`: temporary_store and the moto server."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import EndpointConnectionError

from orchestrator.clock import Clock, SystemClock
from orchestrator.store import NewSession, NewTask, SessionStatus
from orchestrator.testing import FakeClock, temporary_store
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
