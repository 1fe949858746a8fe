"""The run knobs as the entry points parse them: lease length, per-agent limits, progress interval."""

from __future__ import annotations

import pytest

from orchestrator.errors import ValidationError
from orchestrator.scheduler import RunOptions
from orchestrator.tuning import Knobs, parse_agent_limits


@pytest.mark.parametrize(("lease", "heartbeat", "margin"), [(30.0, 6.0, 2.0), (120.0, 8.0, 2.0), (2.0, 0.4, 0.2)])
def test_a_lease_length_brings_its_heartbeat_and_skew_margin(lease: float, heartbeat: float, margin: float) -> None:
    options = RunOptions().with_lease(lease)

    assert (options.lease_seconds, options.heartbeat_interval, options.clock_skew_margin) == pytest.approx(
        (lease, heartbeat, margin))


@pytest.mark.parametrize("lease", [0, -1.0, float("nan"), float("inf")])
def test_a_lease_that_is_not_a_positive_duration_is_refused(lease: float) -> None:
    with pytest.raises(ValidationError, match="lease"):
        RunOptions().with_lease(lease)


def test_agent_limits_are_read_from_repeated_and_comma_separated_items() -> None:
    assert parse_agent_limits(["build=2", "deploy=1, test=3"]) == {"build": 2, "deploy": 1, "test": 3}


def test_an_agent_given_two_different_limits_is_refused() -> None:
    with pytest.raises(ValidationError, match="names agent 'build' twice"):
        parse_agent_limits(["build=2", "build=3"])


def test_knobs_not_given_leave_the_options_as_they_are() -> None:
    base = RunOptions(concurrency=3)

    assert Knobs.parse().options(base) == base


def test_a_worker_shares_its_agent_limits_instead_of_setting_them_per_session() -> None:
    knobs = Knobs.parse(agent_limits=["build=2"])

    assert knobs.options(per_session_limits=False).agent_concurrency == {}
    assert knobs.options().agent_concurrency == {"build": 2}
    assert knobs.worker_limits().per_agent["build"].total_tokens == 2
