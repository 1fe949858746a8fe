"""The one choke point for every DynamoDB request the store sends.

`Caller.call(op, params)` runs PynamoDB's `Connection.dispatch` in a worker thread
under a capacity limiter (PynamoDB is blocking), and classifies each failure by what
the store does next:

- transient (throttling, 5xx, TransactionConflict, connection and read timeouts):
  retried here with exponential backoff and full jitter on the injected clock, up to
  `max_attempts`, then `StoreUnavailableError` naming the endpoint. botocore's own
  retries are off (see `bind_models`), so these are the only retries; throttling never
  reaches an agent as a failure. Under a deadline (`orchestrator.store.deadline`) no
  attempt is sent at or after it and no backoff crosses it;
- conflict (ConditionalCheckFailed, a transaction cancelled by a condition):
  `DynamoCallError`, for the caller's fence logic to classify;
- fatal: ResourceNotFound -> `SchemaError` (the table is missing: run `orchestrator
  init`), ValidationException -> `StoreError`, anything else -> `StoreError`.

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
from orchestrator.errors import OrchestratorError, SchemaError, StoreError, StoreUnavailableError
from orchestrator.store import deadline
from orchestrator.store.config import DynamoDBConfig

__all__ = ["Caller", "DynamoCallError", "RETRYABLE_CODES"]

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


class Caller:
    """Sends requests through one botocore client, with the store's retry policy."""

    def __init__(self, connection: Connection, config: DynamoDBConfig, clock: Clock,
                 rng: random.Random | None = None) -> None:
        self._connection = connection
        self._config = config
        self._clock = clock
        self._rng = rng or random.Random()
        self._limiter = anyio.CapacityLimiter(config.max_pool_connections)

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        return self._limiter

    def context(self, op: str, session: str | None = None, task: str | None = None) -> str:
        return f"[table={self._config.table_name}, op={op}, session={session or '-'}, task={task or '-'}]"

    def _endpoint(self) -> str:
        return self._config.endpoint or f"the regional endpoint of {self._config.region}"

    async def call(self, op: str, params: dict[str, Any], *, session: str | None = None,
                   task: str | None = None, missing_ok: bool = False) -> dict[str, Any]:
        """Send `op` with `params`; retries transient failures; see the module docstring."""
        attempts = self._config.max_attempts
        last: BaseException | None = None
        for attempt in range(attempts):
            if attempt:
                cap = min(self._config.max_backoff_s, self._config.initial_backoff_ms / 1000.0 * 2 ** (attempt - 1))
                pause = self._rng.uniform(0.0, cap)
                left = deadline.remaining(self._clock.now())
                await self._clock.sleep(pause if left is None else max(0.0, min(pause, left)))
            fn: Callable[[], dict[str, Any]]
            if op in _DATA_OPS:  # PynamoDB's dispatch (asks for ConsumedCapacity TOTAL)
                fn = partial(self._connection.dispatch, op, dict(params))
            else:  # control plane: the same client, through its public method
                fn = partial(getattr(self._connection.client, xform_name(op)), **params)
            try:
                return await anyio.to_thread.run_sync(partial(self._send, fn), limiter=self._limiter)
            except ClientError as exc:
                err = exc.response.get("Error", {})
                code = str(err.get("Code", "Unknown"))
                message = str(err.get("Message", exc))
                status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 400) or 400)
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
                if code in _CONFLICT_CODES or (missing_ok and code == "ResourceNotFoundException"):
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

    def _send(self, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        # In the worker thread, right before the request: a call that waited for the
        # limiter or a backoff past the caller's deadline is never sent.
        deadline.check(self._clock.now())
        return fn()

    def _fatal(self, op: str, code: str, message: str, session: str | None, task: str | None) -> OrchestratorError:
        ctx = self.context(op, session, task)
        kw: dict[str, Any] = {"session_id": session, "task_id": task, "table": self._config.table_name,
                              "op": op, "code": code}
        if code == "ResourceNotFoundException":
            where = f"table {self._config.table_name} does not exist in region {self._config.region}"
            if self._config.endpoint:
                where += f" at endpoint {self._config.endpoint}"
            return SchemaError(f"{where}; run `orchestrator init` to create it ({message}) {ctx}", **kw)
        if code == "ValidationException":
            return StoreError(f"DynamoDB refused {op} as invalid: {message}; this is a bug in the SDK or an "
                              f"item too large for DynamoDB's 400 KB limit {ctx}", **kw)
        return StoreError(f"DynamoDB {op} failed with {code}: {message} {ctx}", **kw)

    def to_error(self, exc: DynamoCallError, session: str | None = None, task: str | None = None) -> OrchestratorError:
        """The SDK error for a DynamoCallError the caller did not expect."""
        detail = exc.message + (f" (reasons: {', '.join(exc.reasons)})" if exc.reasons else "")
        return self._fatal(exc.op, exc.code, detail, session, task)
