"""Store URLs: each parameter reaches the config, and a bad value is refused by name."""

from __future__ import annotations

import pytest

from orchestrator.errors import ConfigError
from orchestrator.store import StoreConfig


def test_connections_parameter_sets_the_pool_and_in_flight_bound() -> None:
    config = StoreConfig.from_url("dynamodb://orders?region=eu-west-1&connections=3", env={}).dynamodb
    assert config is not None
    assert config.max_pool_connections == 3


def test_connections_defaults_to_ten() -> None:
    config = StoreConfig.from_url("dynamodb://orders?region=eu-west-1", env={}).dynamodb
    assert config is not None
    assert config.max_pool_connections == 10


@pytest.mark.parametrize("value", ["0", "-2"])
def test_connections_below_one_is_refused_naming_the_parameter(value: str) -> None:
    with pytest.raises(ConfigError, match=rf"connections={int(value)} must be at least 1"):
        StoreConfig.from_url(f"dynamodb://orders?connections={value}", env={})


def test_unknown_url_parameter_is_refused() -> None:
    with pytest.raises(ConfigError, match="conections"):
        StoreConfig.from_url("dynamodb://orders?conections=3", env={})


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_a_busy_timeout_that_is_not_a_finite_wait_is_refused_naming_it(value: str) -> None:
    with pytest.raises(ConfigError, match=r"busy_timeout=.* is not valid; use a number of seconds >= 0"):
        StoreConfig.from_url(f"sqlite:///tmp/x.db?busy_timeout={value}", env={})


def test_a_busy_timeout_of_zero_fails_at_once_on_a_lock() -> None:
    config = StoreConfig.from_url("sqlite:///tmp/x.db?busy_timeout=0", env={}).sqlite
    assert config is not None and config.busy_timeout_s == 0


def test_lease_seconds_on_a_sqlite_url_is_refused_saying_where_the_lease_is_set() -> None:
    with pytest.raises(ConfigError, match=r"lease_seconds is not a store setting.*RunOptions\(lease_seconds="):
        StoreConfig.from_url("sqlite:///tmp/x.db?lease_seconds=60", env={})


def test_mode_ro_opens_a_sqlite_store_read_only_and_other_modes_are_refused() -> None:
    config = StoreConfig.from_url("sqlite:///tmp/x.db?mode=ro", env={}).sqlite
    assert config is not None and config.read_only and config.url == "sqlite:///tmp/x.db?mode=ro"
    with pytest.raises(ConfigError, match="mode='rwc' is not valid"):
        StoreConfig.from_url("sqlite:///tmp/x.db?mode=rwc", env={})
