"""The ``delivery:`` section of silo-router.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar import config
from sidecar.config import DeliverySettings
from sidecar.errors import ConfigError


def load(delivery: object) -> DeliverySettings:
    return config.from_mapping({"delivery": delivery}, {}, Path.cwd()).delivery


def test_defaults_are_sentrys_numbers() -> None:
    s = config.from_mapping({}, {}, Path.cwd()).delivery
    assert (s.max_attempts, s.backoff_base_s, s.backoff_rate, s.backoff_max_s) == (10, 180.0, 1.4, 3600.0)
    assert s.max_age_s == 3 * 86400
    assert s.drop_statuses == frozenset({400, 401, 403, 404, 409})
    assert (s.batch_size, s.parallel_threshold, s.parallel_width) == (300, 60, 4)
    assert s.slack_response_hosts == ("hooks.slack.com",)
    assert s.discord_base_url == "https://discord.com"


def test_every_setting_can_be_set() -> None:
    s = load(
        {
            "workers": 3,
            "max_attempts": 5,
            "backoff_base_s": 1,
            "drop_statuses": [400, 410],
            "slack_response_hosts": "http://127.0.0.1:8125",
            "discord_base_url": "http://127.0.0.1:8126",
            "retention_s": 0,
        }
    )
    assert (s.workers, s.max_attempts, s.backoff_base_s) == (3, 5, 1.0)
    assert s.drop_statuses == frozenset({400, 410})
    assert s.slack_response_hosts == ("http://127.0.0.1:8125",)
    assert (s.discord_base_url, s.retention_s) == ("http://127.0.0.1:8126", 0.0)


@pytest.mark.parametrize(
    "delivery",
    [
        {"max_atempts": 3},  # a typo must not silently keep the default
        {"workers": 0},
        {"batch_size": "many"},
        {"lease_s": 10},  # shorter than a send can take (2 × 12 s + 2 s)
        {"drop_statuses": 404},
        ["not", "a", "mapping"],
    ],
)
def test_bad_settings_are_refused(delivery: object) -> None:
    with pytest.raises(ConfigError):
        load(delivery)
