"""DetectorConfig: defaults, loading from a policy-file mapping, and refusing bad values."""

from __future__ import annotations

from typing import Any

import pytest

from trustwire.detect import (
    AlertKind,
    BurstThreshold,
    DetectorConfig,
    DetectorSet,
    FanoutConfig,
    RateBaselineConfig,
)
from trustwire.errors import ConfigurationError


def test_defaults_are_documented_values() -> None:
    config = DetectorConfig()
    assert config.auth_failures == BurstThreshold(50, 10.0)
    assert config.auth_failures_per_source == BurstThreshold(10, 10.0)
    assert config.replays == BurstThreshold(10, 10.0)
    assert config.denials == BurstThreshold(20, 10.0)
    assert config.rate_limited == BurstThreshold(100, 10.0)
    assert config.rate == RateBaselineConfig()
    assert config.fanout == FanoutConfig()
    assert config.cooldown == 60.0
    assert config.disabled == frozenset()


def test_an_empty_mapping_gives_the_defaults() -> None:
    assert DetectorConfig.from_mapping({}) == DetectorConfig()


def test_a_mapping_overrides_only_what_it_names() -> None:
    config = DetectorConfig.from_mapping(
        {
            "denials": {"count": 5},
            "rate": {"factor": 8, "warmup": 10},
            "fanout": {"window": 30},
            "cooldown": 30,
            "max_tracked": 500,
            "disabled": ["fanout", "rate_limit_storm"],
        }
    )
    assert config.denials == BurstThreshold(5, 10.0)
    assert config.rate.factor == 8.0
    assert config.rate.warmup == 10.0
    assert config.rate.floor == RateBaselineConfig().floor
    assert config.fanout.window == 30.0
    assert config.cooldown == 30.0
    assert config.max_tracked == 500
    assert config.disabled == {AlertKind.FANOUT, AlertKind.RATE_LIMIT_STORM}


def test_to_mapping_round_trips() -> None:
    config = DetectorConfig(
        replays=BurstThreshold(3, 2.5), cooldown=5.0, disabled=frozenset({AlertKind.FANOUT})
    )
    assert DetectorConfig.from_mapping(config.to_mapping()) == config


def test_disabled_kinds_are_left_out_of_the_detector_set() -> None:
    config = DetectorConfig.from_mapping({"disabled": [k.value for k in AlertKind]})
    assert DetectorSet(config).detectors == ()


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        ({"denial": {"count": 5}}, "unknown setting(s): denial"),
        ({"denials": {"cout": 5}}, "denials: unknown setting(s): cout"),
        ({"denials": {"count": 0}}, "count must be an integer of at least 1"),
        ({"denials": {"count": 2.5}}, "denials.count must be an integer"),
        ({"denials": {"count": True}}, "denials.count must be an integer"),
        ({"denials": {"window": "10s"}}, "denials.window must be a number"),
        ({"denials": {"window": -1}}, "window must be a positive number"),
        ({"denials": {"window": float("inf")}}, "denials.window must be finite"),
        ({"denials": [5, 10]}, "denials must be a mapping"),
        ({"rate": {"alpha": 0}}, "alpha must be in (0, 1]"),
        ({"rate": {"factor": -2}}, "factor must be greater than 0"),
        ({"fanout": {"known_peers": 5}}, "known_peers must be at least count"),
        ({"cooldown": -1}, "cooldown must be a non-negative"),
        ({"max_tracked": 0}, "max_tracked must be greater than 0"),
        ({"idle_timeout": "1h"}, "idle_timeout must be a number"),
        ({"disabled": "fanout"}, "disabled must be a list"),
        ({"disabled": ["fan-out"]}, "unknown alert kind 'fan-out'"),
    ],
)
def test_bad_settings_are_refused_with_the_name_of_the_setting(
    data: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        DetectorConfig.from_mapping(data)
    assert complaint in str(info.value)


def test_a_non_mapping_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        DetectorConfig.from_mapping(["denials"])  # type: ignore[arg-type]


def test_direct_construction_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="count"):
        BurstThreshold(0, 1.0)
    with pytest.raises(ValueError, match="window"):
        BurstThreshold(1, 0.0)
    with pytest.raises(ValueError, match="max_tracked"):
        DetectorConfig(max_tracked=0)
    with pytest.raises(ValueError, match="warmup"):
        FanoutConfig(warmup=-1.0)
