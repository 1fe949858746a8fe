"""The one choke point for every DynamoDB request the store sends.

`Caller.call(op, params)` calls the public method of the botocore client that PynamoDB's
`Connection` created (a data operation asks for ConsumedCapacity TOTAL, as PynamoDB's
`dispatch` does; its wrapping, a UUID and two signals per request, is skipped) in a worker
thread under a capacity limiter (the client is blocking), and classifies each failure by
what the store does next:

- transient (throttling, any 5xx whatever its body, TransactionConflict, connection
  resets, connect and read timeouts): retried here with exponential backoff and full
  jitter on the injected clock, up to `max_attempts`, then `StoreUnavailableError`
  naming the endpoint. botocore's own retries are off (see `bind_models`), so these are
  the only retries; throttling never reaches an agent as a failure. A 5xx whose body is
  not DynamoDB's JSON (a gateway's HTML page, an empty 502) has no error code; its
  status is read from botocore's `ResponseMetadata` on the ClientError;
- conflict (ConditionalCheckFailed, a transaction cancelled by a condition) and an
  operation the store does not have (UnknownOperationException, e.g. TransactWriteItems
  on dynalite): `DynamoCallError`, for the caller to decide (fence logic, a fallback);
- fatal: ResourceNotFound -> `SchemaError` (the table is missing: run `orchestrator
  init`), ValidationException -> `StoreError`, anything else -> `StoreError`. Table
  administration passes `any_error=True` to get every non-transient answer as a
  `DynamoCallError`, so a feature the store lacks becomes a warning, not a failure.

A deadline bounds the retries (`call(..., deadline=)`, on the store clock's
`monotonic()`): no attempt is sent at or after it (checked in the worker thread, right
before the request, so a wait for the connection pool counts too) and no backoff sleeps
past it; `StoreDeadlineError` says so instead. The deadline of the caller's context
(`orchestrator.store.deadline`, a runner's lease) is checked at the same two points and
raises its own error. A request sent before either may still land.

Every message ends with `[table=…, op=…, session=…, task=…]`; the cause is chained and
a transaction's cancellation reasons are kept on the error (`reasons`).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from functools import partial
from typing import Any

import anyio
import anyio.to_thread
from botocore import xform_name
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
)
from pynamodb.connection import Connection

from orchestrator.clock import Clock
from orchestrator.errors import (
    OrchestratorError,
    SchemaError,
    StoreDeadlineError,
    StoreError,
    StoreUnavailableError,
)
from orchestrator.store import deadline as call_deadline
from orchestrator.store.config import DynamoDBConfig

__all__ = ["Caller", "DynamoCallError", "RETRYABLE_CODES", "UNSUPPORTED_CODES", "http_status"]

RETRYABLE_CODES = frozenset({
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "Throttling",
    "RequestLimitExceeded",
    "InternalServerError",
    "InternalFailure",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "TransactionConflictException",
    "TransactionInProgressException",
    "LimitExceededException",
})
#: Cancellation reasons of a transaction that a plain retry can clear.
_RETRYABLE_REASONS = frozenset({
    "TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded", "RequestLimitExceeded", "None",
})
_DATA_OPS = frozenset({"GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "BatchWriteItem",
                       "TransactWriteItems", "BatchGetItem", "TransactGetItems"})
#: Codes the caller handles itself (returned as DynamoCallError, never retried).
_CONFLICT_CODES = frozenset({"ConditionalCheckFailedException", "TransactionCanceledException",
                             "ResourceInUseException"})
#: The store has no such operation (a DynamoDB-compatible store without transactions, TTL, PITR).
UNSUPPORTED_CODES = frozenset({"UnknownOperationException"})


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of a botocore ClientError (`ResponseMetadata.HTTPStatusCode`), or of
    one in its causes (PynamoDB's `VerboseClientError` keeps only `Error` and chains the original)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ClientError):
            status = seen.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status:
                return int(status)
        seen = seen.__cause__
    return None


def _reasons_from_message(message: str) -> list[str]:
    """Cancellation reasons from the message, for servers that omit `CancellationReasons` (moto)."""
    found = re.search(r"\[([A-Za-z, ]+)\]\s*$", message)
    return [r.strip() for r in found.group(1).split(",")] if found else []


class DynamoCallError(Exception):
    """A DynamoDB answer the calling operation must interpret (a failed condition, ...).

    `reasons` holds a cancelled transaction's per-item reason codes, in request order.
    """

    def __init__(self, op: str, code: str, message: str, reasons: list[str] | None = None,
                 item: dict[str, Any] | None = None) -> None:
        super().__init__(f"{op}: {code}: {message}")
        self.op = op
        self.code = code
        self.message = message
        self.reasons = reasons or []
        self.item = item

    @property
    def condition_failed(self) -> bool:
        return self.code == "ConditionalCheckFailedException" or "ConditionalCheckFailed" in self.reasons

    @property
    def unsupported(self) -> bool:
        """The store does not have this operation at all."""
        return self.code in UNSUPPORTED_CODES


class Caller:
    """Sends requests through one botocore client, with the store's retry policy."""

    def __init__(self, connection: Connection, config: DynamoDBConfig, clock: Clock,
                 rng: random.Random | None = None) -> None:
        self._connection = connection
        self._config = config
        self._clock = clock
        self._rng = rng or random.Random()
        self._limiter = anyio.CapacityLimiter(config.max_pool_connections)
        self._methods: dict[str, Callable[..., dict[str, Any]]] = {}

    def _method(self, op: str) -> Callable[..., dict[str, Any]]:
        """The client's public method for `op`; a data operation asks for ConsumedCapacity
        TOTAL, as PynamoDB's `dispatch` does, so `after-call` hooks can read it."""
        method = self._methods.get(op)
        if method is None:
            method = getattr(self._connection.client, xform_name(op))
            if op in _DATA_OPS:
                method = partial(method, ReturnConsumedCapacity="TOTAL")
            self._methods[op] = method
        return method

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        return self._limiter

    def context(self, op: str, session: str | None = None, task: str | None = None) -> str:
        return f"[table={self._config.table_name}, op={op}, session={session or '-'}, task={task or '-'}]"

    def _endpoint(self) -> str:
        return self._config.endpoint or f"the regional endpoint of {self._config.region}"

    async def call(self, op: str, params: dict[str, Any], *, session: str | None = None,
                   task: str | None = None, missing_ok: bool = False, any_error: bool = False,
                   deadline: float | None = None) -> dict[str, Any]:
        """Send `op` with `params`; retries transient failures; see the module docstring.

        `deadline` (seconds of the store clock's `monotonic()`): no attempt at or after it,
        no backoff past it. `any_error`: return every non-transient error as a DynamoCallError.
        """
        attempts = self._config.max_attempts
        last: BaseException | None = None
        for attempt in range(attempts):
            await self.pause(attempt, op, deadline=deadline, last=last, session=session, task=task)
            fn: Callable[[], dict[str, Any]] = partial(self._method(op), **params)
            try:
                send = partial(self._send, fn, op, deadline, attempt, last, session, task)
                return await anyio.to_thread.run_sync(send, limiter=self._limiter)
            except ClientError as exc:
                err = exc.response.get("Error", {})
                code = str(err.get("Code", "Unknown"))
                message = str(err.get("Message", exc))
                status = http_status(exc) or (int(code) if code.isdigit() else 400)
                reasons = [str(r.get("Code", "None")) for r in exc.response.get("CancellationReasons", [])]
                if code == "TransactionCanceledException" and not reasons:
                    reasons = _reasons_from_message(message)
                if code == "TransactionCanceledException" and reasons and all(
                    r in _RETRYABLE_REASONS for r in reasons
                ):
                    last = exc
                    continue
                if code in RETRYABLE_CODES or status >= 500:
                    last = exc
                    continue
                if (any_error or code in _CONFLICT_CODES or code in UNSUPPORTED_CODES
                        or (missing_ok and code == "ResourceNotFoundException")):
                    raise DynamoCallError(op, code, message, reasons) from exc
                raise self._fatal(op, code, message, session, task) from exc
            except NoCredentialsError as exc:
                raise StoreError(
                    f"no AWS credentials to call DynamoDB {op} on {self._endpoint()}: set AWS_PROFILE or "
                    f"AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY {self.context(op, session, task)}",
                    session_id=session, task_id=task, table=self._config.table_name, op=op,
                ) from exc
            except (BotoConnectionError, HTTPClientError) as exc:  # refused, connect/read timeout, reset
                last = exc
                continue
            except BotoCoreError as exc:
                raise StoreError(
                    f"DynamoDB {op} failed before reaching {self._endpoint()}: {exc} "
                    f"{self.context(op, session, task)}",
                    session_id=session, task_id=task, table=self._config.table_name, op=op,
                ) from exc
        raise StoreUnavailableError(
            f"DynamoDB at {self._endpoint()} did not serve {op} after {attempts} attempts (last: {last}); "
            f"check the endpoint, the network and the table's capacity, or raise DYNAMODB_MAX_ATTEMPTS / "
            f"DYNAMODB_TIMEOUT {self.context(op, session, task)}",
            session_id=session, task_id=task, table=self._config.table_name, op=op,
            endpoint=self._config.endpoint,
        ) from last

    async def pause(self, attempt: int, op: str, *, deadline: float | None = None, last: BaseException | None = None,
                    session: str | None = None, task: str | None = None) -> None:
        """Before attempt `attempt` (0 first): sleep the backoff (full jitter) unless it would
        reach the deadline, and refuse an attempt at or after it (StoreDeadlineError)."""
        delay = 0.0
        if attempt:
            cap = min(self._config.max_backoff_s, self._config.initial_backoff_ms / 1000.0 * 2 ** (attempt - 1))
            delay = self._rng.uniform(0.0, cap)
        self._within(deadline, delay, op, attempt, last, session, task)
        # The deadline of the caller's context (a lease's, orchestrator.store.deadline) too:
        # a backoff that would reach it is not slept; its error is raised now.
        call_deadline.check(self._clock.now() + delay)
        if delay:
            await self._clock.sleep(delay)

    def _send(self, fn: Callable[[], dict[str, Any]], op: str, deadline: float | None, attempt: int,
              last: BaseException | None, session: str | None, task: str | None) -> dict[str, Any]:
        # In the worker thread, right before the request: a call that waited for the
        # connection pool past its deadline is never sent.
        self._within(deadline, 0.0, op, attempt, last, session, task)
        call_deadline.check(self._clock.now())
        return fn()

    def _within(self, deadline: float | None, ahead: float, op: str, attempt: int, last: BaseException | None,
                session: str | None, task: str | None) -> None:
        """StoreDeadlineError if `ahead` seconds from now reach the deadline."""
        if deadline is None:
            return
        now = self._clock.monotonic()
        if now + ahead >= deadline:
            raise StoreDeadlineError.reached(op, deadline, now, attempt, last, self.context(op, session, task),
                                             session_id=session, task_id=task, table=self._config.table_name)

    def _fatal(self, op: str, code: str, message: str, session: str | None, task: str | None) -> OrchestratorError:
        ctx = self.context(op, session, task)
        kw: dict[str, Any] = {"session_id": session, "task_id": task, "table": self._config.table_name,
                              "op": op, "code": code}
        # A table from before an index: DynamoDB answers ValidationException, moto ResourceNotFoundException.
        if op == "Query" and code in ("ValidationException", "ResourceNotFoundException") and "index" in message:
            return SchemaError(f"table {self._config.table_name} lacks an index this SDK reads ({message}); run "
                               f"`orchestrator init` to add it {ctx}", **kw)
        if code == "ResourceNotFoundException":
            where = f"table {self._config.table_name} does not exist in region {self._config.region}"
            if self._config.endpoint:
                where += f" at endpoint {self._config.endpoint}"
            return SchemaError(f"{where}; run `orchestrator init` to create it ({message}) {ctx}", **kw)
        if code in UNSUPPORTED_CODES:
            return StoreError(f"the store at {self._endpoint()} does not support {op} ({code}: {message}); it is a "
                              f"DynamoDB-compatible store without it: use one that has it, or DynamoDB {ctx}", **kw)
        if code == "ValidationException":
            return StoreError(f"DynamoDB refused {op} as invalid: {message}; this is a bug in the SDK or an "
                              f"item too large for DynamoDB's 400 KB limit {ctx}", **kw)
        return StoreError(f"DynamoDB {op} failed with {code}: {message} {ctx}", **kw)

    def to_error(self, exc: DynamoCallError, session: str | None = None, task: str | None = None) -> OrchestratorError:
        """The SDK error for a DynamoCallError the caller did not expect."""
        detail = exc.message + (f" (reasons: {', '.join(exc.reasons)})" if exc.reasons else "")
        return self._fatal(exc.op, exc.code, detail, session, task)
