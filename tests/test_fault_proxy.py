"""The fault-injecting proxy (`orchestrator.testing.fault_proxy`) does on the wire what it says.

Each test starts its own proxy on 127.0.0.1 in front of the session's moto server and
stops it; requests are made with a plain botocore client (no retries) or raw HTTP.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError

from orchestrator.errors import ConfigError
from orchestrator.testing import FakeClock
from orchestrator.testing.fault_proxy import FaultProxy, Faults

_TARGET = "DynamoDB_20120810."


@pytest.fixture
def upstream(moto_upstream: str) -> str:
    return moto_upstream


def client(endpoint: str) -> Any:
    return boto3.client("dynamodb", region_name="us-east-1", endpoint_url=endpoint,
                        config=Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=10))


def raw(endpoint: str, op: str = "ListTables") -> tuple[int, str, bytes]:
    """POST an empty request for `op`; (status, content type, body)."""
    host, port = endpoint.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("POST", "/", b"{}", {"X-Amz-Target": _TARGET + op,
                                          "Content-Type": "application/x-amz-json-1.0"})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type") or "", resp.read()
    finally:
        conn.close()


def test_without_faults_every_request_is_forwarded_and_answered(upstream: str) -> None:
    with FaultProxy(upstream) as proxy:
        assert proxy.endpoint.startswith("http://127.0.0.1:")
        ddb = client(proxy.endpoint)
        for _ in range(3):
            assert "TableNames" in ddb.list_tables()
        assert (proxy.seen, proxy.forwarded, sum(proxy.injected.values())) == (3, 3, 0)


def test_throttling_is_a_400_with_dynamodbs_json_error_and_is_not_forwarded(upstream: str) -> None:
    with FaultProxy(upstream, Faults(throttle=1.0)) as proxy:
        with pytest.raises(ClientError) as info:
            client(proxy.endpoint).list_tables()
        assert info.value.response["Error"]["Code"] in ("ProvisionedThroughputExceededException",
                                                        "ThrottlingException")
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert (proxy.forwarded, proxy.injected["throttle"]) == (0, 1)


@pytest.mark.parametrize("kind", ["error_json", "error_html", "error_empty"])
def test_server_errors_are_5xx_with_a_json_an_html_or_an_empty_body(upstream: str, kind: str) -> None:
    faults = {"error_json": Faults(error_json=1.0), "error_html": Faults(error_html=1.0),
              "error_empty": Faults(error_empty=1.0)}[kind]
    with FaultProxy(upstream, faults) as proxy:
        status, content_type, body = raw(proxy.endpoint)
        assert status >= 500 and proxy.forwarded == 0 and proxy.injected[kind] == 1
    if kind == "error_json":
        assert json.loads(body)["__type"].endswith("#InternalServerError")
    elif kind == "error_html":
        assert content_type == "text/html" and b"<html" in body.lower() and status == 503
    else:
        assert body == b"" and status in (502, 503, 504)


def test_a_lost_response_lands_upstream_and_the_client_sees_the_connection_close(upstream: str) -> None:
    with FaultProxy(upstream) as proxy:
        ddb = client(proxy.endpoint)
        ddb.create_table(TableName="lost-1", BillingMode="PAY_PER_REQUEST",
                         AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
                         KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}])
        proxy.faults = Faults(lost=1.0)
        with pytest.raises(ConnectionClosedError):
            ddb.put_item(TableName="lost-1", Item={"k": {"S": "landed"}})
        proxy.faults = Faults()
        assert ddb.get_item(TableName="lost-1", Key={"k": {"S": "landed"}})["Item"] == {"k": {"S": "landed"}}
        assert proxy.injected["lost"] == 1 and proxy.forwarded == proxy.seen


def test_hold_keeps_requests_until_release(upstream: str) -> None:
    with FaultProxy(upstream) as proxy:
        proxy.hold()
        answers: list[int] = []
        sender = threading.Thread(target=lambda: answers.append(raw(proxy.endpoint)[0]))
        sender.start()
        sender.join(timeout=0.5)
        assert sender.is_alive() and proxy.held == 1 and proxy.forwarded == 0
        proxy.release()
        sender.join(timeout=10)
        assert answers == [200] and proxy.held == 0 and proxy.forwarded == 1


def test_stop_releases_held_requests_without_forwarding_them_and_closes_the_port(upstream: str) -> None:
    proxy = FaultProxy(upstream).start()
    endpoint = proxy.endpoint
    proxy.hold()
    errors: list[BaseException] = []

    def send() -> None:
        try:
            raw(endpoint)
        except (OSError, http.client.HTTPException) as exc:
            errors.append(exc)

    sender = threading.Thread(target=send)
    sender.start()
    sender.join(timeout=0.5)
    proxy.stop()
    sender.join(timeout=10)
    assert not sender.is_alive() and len(errors) == 1 and proxy.forwarded == 0
    port = int(endpoint.rsplit(":", 1)[1])
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_respond_answers_one_operation_and_forwards_the_others(upstream: str) -> None:
    with FaultProxy(upstream) as proxy:
        proxy.respond("TransactWriteItems", 400, {"__type": "com.amazon.coral.service#UnknownOperationException"})
        status, _, body = raw(proxy.endpoint, "TransactWriteItems")
        assert (status, json.loads(body)["__type"]) == (400, "com.amazon.coral.service#UnknownOperationException")
        assert raw(proxy.endpoint, "ListTables")[0] == 200
        assert proxy.injected["answered"] == 1 and proxy.forwarded == 1


def test_arrivals_are_recorded_on_the_injected_clock_with_the_fault_drawn(upstream: str) -> None:
    clock = FakeClock(start=100.0)
    with FaultProxy(upstream, Faults(throttle=1.0, ops=frozenset({"DescribeTable"})), clock=clock,
                    record_arrivals=True) as proxy:
        raw(proxy.endpoint, "ListTables")
        clock.advance(5.0)
        raw(proxy.endpoint, "DescribeTable")
        assert [(a.at, a.op, a.fault) for a in proxy.arrivals] == [(100.0, "ListTables", None),
                                                                   (105.0, "DescribeTable", "throttle")]


def test_the_same_seed_draws_the_same_faults(upstream: str) -> None:
    def draws(seed: int) -> list[str | None]:
        with FaultProxy(upstream, Faults(throttle=0.3, error_empty=0.3), seed=seed, record_arrivals=True) as proxy:
            for _ in range(12):
                raw(proxy.endpoint)
            return [a.fault for a in proxy.arrivals]

    assert draws(7) == draws(7) != draws(8)


def test_limit_bounds_the_number_of_faults_injected(upstream: str) -> None:
    with FaultProxy(upstream, Faults(error_empty=1.0, limit=2)) as proxy:
        assert [raw(proxy.endpoint)[0] >= 500 for _ in range(4)] == [True, True, False, False]
        assert (proxy.injected["error_empty"], proxy.forwarded) == (2, 2)


def test_fault_rates_outside_zero_to_one_or_summing_over_one_are_refused() -> None:
    with pytest.raises(ConfigError, match="sum to at most 1"):
        Faults(throttle=0.7, lost=0.5)
    with pytest.raises(ConfigError, match=r"each be in 0\.\.1"):
        Faults(error_html=-0.1)
