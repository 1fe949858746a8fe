"""Store configuration: one URL, with the environment as a layer on top.

    sqlite:///abs/path/state.db?synchronous=FULL&retention_days=30&busy_timeout=30
    sqlite:///abs/path/state.db?mode=ro            (read-only: never writes)
    sqlite:relative/path/state.db
    dynamodb://TABLE?region=eu-west-1&endpoint=http://127.0.0.1:8000&transactions=0

`StoreConfig.from_url` parses a URL; `StoreConfig.from_env(env)` reads
`ORCHESTRATOR_STORE` (default: SQLite in the user's state directory) and, for
DynamoDB, `AWS_REGION`, `DYNAMODB_ENDPOINT`, `DYNAMODB_TIMEOUT`,
`DYNAMODB_MAX_ATTEMPTS`, `DYNAMODB_INITIAL_BACKOFF_MS`, `DYNAMODB_MAX_BACKOFF_SEC` and
`ORCHESTRATOR_TABLE_PREFIX` (e.g. `t-developer-prod-`). Query parameters win over the
environment. Only entry points (CLI, `open_store()` without a URL) read the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

from orchestrator.errors import ConfigError

__all__ = ["DynamoDBConfig", "SQLiteConfig", "StoreConfig", "default_sqlite_path"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def default_sqlite_path(env: Mapping[str, str] | None = None) -> Path:
    """`$XDG_STATE_HOME/orchestrator/state.db` (default `~/.local/state/...`).

    The user's state directory, not the current one, so a cron job started elsewhere
    sees the same store.
    """
    env = os.environ if env is None else env
    base = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local" / "state")
    return Path(base) / "orchestrator" / "state.db"


@dataclass(frozen=True, slots=True)
class SQLiteConfig:
    """One SQLite file and how it is opened.

    `read_only` (URL `?mode=ro`) opens an existing file with SQLite's `mode=ro`: nothing
    is created, migrated or purged, writes are refused, and a file the user cannot
    write (nor its directory) can still be read. The CLI's reading commands use it.
    """

    path: Path
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    busy_timeout_s: float = 30.0  # how long a write waits for another connection's lock
    retention_days: float = 90.0  # ended sessions and events older than this are purged
    read_only: bool = False

    def __post_init__(self) -> None:
        if self.synchronous not in ("NORMAL", "FULL"):
            raise ConfigError(
                f"sqlite synchronous={self.synchronous!r} is not supported; use NORMAL "
                f"(durable across process crashes) or FULL (also across power loss)"
            )
        if not self.retention_days > 0:
            raise ConfigError.bad_setting(f"sqlite store {self.path}", "retention_days", self.retention_days,
                                          "a number of days > 0")
        if not 0 <= self.busy_timeout_s < float("inf"):
            raise ConfigError.bad_setting(
                f"sqlite store {self.path}", "busy_timeout", self.busy_timeout_s,
                "a number of seconds >= 0 (0: fail at once when another process holds the write lock)",
            )

    @property
    def url(self) -> str:
        base = f"sqlite://{self.path}" if self.path.is_absolute() else f"sqlite:{self.path}"
        return f"{base}?mode=ro" if self.read_only else base


@dataclass(frozen=True, slots=True)
class DynamoDBConfig:
    table: str
    region: str = "us-east-1"
    endpoint: str | None = None
    timeout_s: float = 5.0
    max_attempts: int = 8  # store-level retries of throttling/5xx, never agent attempts
    initial_backoff_ms: float = 25.0
    max_backoff_s: float = 5.0
    table_prefix: str = ""
    status_shards: int = 4  # write shards of the status index
    transactions: bool = True  # False: single-item conditional writes only
    billing_mode: Literal["PAY_PER_REQUEST", "PROVISIONED"] = "PAY_PER_REQUEST"
    read_capacity: int = 5
    write_capacity: int = 5
    point_in_time_recovery: bool = True
    deletion_protection: bool = False
    ttl_days: float = 90.0
    max_pool_connections: int = 10

    def __post_init__(self) -> None:
        name = self.table_name
        if not (3 <= len(name) <= 255) or not all(c.isalnum() or c in "_.-" for c in name):
            raise ConfigError(
                f"DynamoDB table name {name!r} is invalid: use 3-255 letters, digits, '_', '.' or '-'"
            )
        if self.status_shards < 1 or self.status_shards > 64:
            raise ConfigError(f"status_shards={self.status_shards} must be between 1 and 64")
        if self.max_attempts < 1:
            raise ConfigError(f"DYNAMODB_MAX_ATTEMPTS={self.max_attempts} must be at least 1")
        if self.max_pool_connections < 1:
            raise ConfigError(f"connections={self.max_pool_connections} must be at least 1")
        if self.timeout_s <= 0:
            raise ConfigError(f"DYNAMODB_TIMEOUT={self.timeout_s} must be > 0 seconds")
        if self.billing_mode not in ("PAY_PER_REQUEST", "PROVISIONED"):
            raise ConfigError(f"billing_mode={self.billing_mode!r}: use PAY_PER_REQUEST or PROVISIONED")
        if self.endpoint is not None:
            parts = urlsplit(self.endpoint)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(
                    f"DynamoDB endpoint {self.endpoint!r} is not an http(s) URL; "
                    f"use e.g. http://127.0.0.1:8000"
                )

    @property
    def table_name(self) -> str:
        return f"{self.table_prefix}{self.table}"

    @property
    def url(self) -> str:
        q = f"?region={self.region}"
        if self.endpoint:
            q += f"&endpoint={self.endpoint}"
        return f"dynamodb://{self.table_name}{q}"


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Which backend, and its settings. Build with `from_url` or `from_env`."""

    sqlite: SQLiteConfig | None = None
    dynamodb: DynamoDBConfig | None = None
    env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def backend(self) -> str:
        return "dynamodb" if self.dynamodb is not None else "sqlite"

    @property
    def url(self) -> str:
        if self.dynamodb is not None:
            return self.dynamodb.url
        assert self.sqlite is not None
        return self.sqlite.url

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StoreConfig:
        env = dict(os.environ if env is None else env)
        url = env.get("ORCHESTRATOR_STORE", "").strip()
        if not url:
            return cls(sqlite=SQLiteConfig(path=default_sqlite_path(env)), env=env)
        return cls.from_url(url, env=env)

    @classmethod
    def from_url(cls, url: str, *, env: Mapping[str, str] | None = None) -> StoreConfig:
        env = {} if env is None else dict(env)
        if url.startswith("sqlite:"):
            return cls(sqlite=_sqlite_from_url(url, env), env=env)
        if url.startswith("dynamodb:"):
            return cls(dynamodb=_dynamodb_from_url(url, env), env=env)
        raise ConfigError(
            f"store URL {url!r} has an unknown scheme; use sqlite:///path/to/state.db or "
            f"dynamodb://TABLE?region=REGION (set it with --store or ORCHESTRATOR_STORE)"
        )


def _query(url: str, raw: str, allowed: set[str]) -> dict[str, str]:
    params = dict(parse_qsl(raw, keep_blank_values=True))
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ConfigError(
            f"store URL {url!r} has unknown parameter(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(allowed))}"
        )
    return params


def _bool(url: str, key: str, value: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ConfigError(f"store URL {url!r}: {key}={value!r} is not a boolean; use 1/0, true/false")


def _number(source: str, key: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"{source}: {key}={value!r} is not a number") from None


def _sqlite_from_url(url: str, env: Mapping[str, str]) -> SQLiteConfig:
    body, _, raw_query = url[len("sqlite:") :].partition("?")
    params = _query(url, raw_query, {"synchronous", "retention_days", "busy_timeout", "mode", "lease_seconds"})
    if "lease_seconds" in params:
        # Accepted once and never used: the lease belongs to a run, not to the file.
        raise ConfigError(
            f"store URL {url!r}: lease_seconds is not a store setting (the lease is a run's); remove it and "
            f"set RunOptions(lease_seconds=...) for the runs that need it",
            setting="lease_seconds",
        )
    if body.startswith("//"):
        body = body[2:]  # sqlite:///abs/path -> /abs/path ; sqlite:// -> default
    path = Path(body) if body else default_sqlite_path(env)
    if path.exists() and path.is_dir():
        raise ConfigError(f"store URL {url!r} names a directory; name a file, e.g. {path / 'state.db'}")
    mode = params.get("mode", "rw").lower()
    if mode not in ("ro", "rw"):
        raise ConfigError.bad_setting(f"store URL {url!r}", "mode", params["mode"],
                                      "ro (read-only: never writes) or rw (the default)")
    cfg = SQLiteConfig(path=path, synchronous=params.get("synchronous", "NORMAL").upper(),  # type: ignore[arg-type]
                       read_only=mode == "ro")
    if "retention_days" in params:
        cfg = replace(cfg, retention_days=_number(url, "retention_days", params["retention_days"]))
    if "busy_timeout" in params:
        cfg = replace(cfg, busy_timeout_s=_number(url, "busy_timeout", params["busy_timeout"]))
    return cfg


def _dynamodb_from_url(url: str, env: Mapping[str, str]) -> DynamoDBConfig:
    parts = urlsplit(url)
    if parts.scheme != "dynamodb" or not parts.netloc:
        raise ConfigError(
            f"store URL {url!r} names no table; use dynamodb://TABLE?region=REGION"
            f"[&endpoint=http://127.0.0.1:8000]"
        )
    params = _query(
        url,
        parts.query,
        {
            "region", "endpoint", "timeout", "max_attempts", "initial_backoff_ms", "max_backoff_sec",
            "prefix", "shards", "transactions", "billing_mode", "pitr", "deletion_protection", "ttl_days",
            "connections",
        },
    )
    src = "environment"
    kwargs: dict[str, object] = {
        "table": parts.netloc,
        "region": params.get("region") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
        "endpoint": params.get("endpoint") or env.get("DYNAMODB_ENDPOINT") or None,
        "table_prefix": params.get("prefix", env.get("ORCHESTRATOR_TABLE_PREFIX", "")),
    }
    numeric = {
        "timeout_s": ("timeout", "DYNAMODB_TIMEOUT"),
        "max_attempts": ("max_attempts", "DYNAMODB_MAX_ATTEMPTS"),
        "initial_backoff_ms": ("initial_backoff_ms", "DYNAMODB_INITIAL_BACKOFF_MS"),
        "max_backoff_s": ("max_backoff_sec", "DYNAMODB_MAX_BACKOFF_SEC"),
        "status_shards": ("shards", None),
        "ttl_days": ("ttl_days", None),
        "max_pool_connections": ("connections", None),
    }
    for attr, (param, env_name) in numeric.items():
        if param in params:
            value = _number(url, param, params[param])
        elif env_name and env.get(env_name):
            value = _number(src, env_name, env[env_name])
        else:
            continue
        kwargs[attr] = int(value) if attr in ("max_attempts", "status_shards", "max_pool_connections") else value
    for attr, param in (("transactions", "transactions"), ("point_in_time_recovery", "pitr"),
                        ("deletion_protection", "deletion_protection")):
        if param in params:
            kwargs[attr] = _bool(url, param, params[param])
    if "billing_mode" in params:
        kwargs["billing_mode"] = params["billing_mode"].upper()
    return DynamoDBConfig(**kwargs)  # type: ignore[arg-type]
