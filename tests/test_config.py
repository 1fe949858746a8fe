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
