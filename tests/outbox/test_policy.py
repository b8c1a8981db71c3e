"""The delivery policy: pure functions, Sentry's numbers (reference §5.1, §5.5)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.config import DeliverySettings
from sidecar.outbox import policy
from sidecar.outbox.policy import Attempt, Dead, Delivered, Retry

S = DeliverySettings()
NOW = 1_700_000_000.0
MINUTE = 60.0


def test_backoff_is_sentrys_schedule() -> None:
    # Reference §5.1: delays after attempts 1..10 ≈ 4.2, 5.9, 8.2, 11.5, 16.1, 22.6, 31.6, 44.3, 60, 60 minutes.
    minutes = [round(policy.backoff_s(n, S) / MINUTE, 1) for n in range(1, 11)]
    assert minutes == [4.2, 5.9, 8.2, 11.5, 16.1, 22.6, 31.6, 44.3, 60.0, 60.0]


@given(st.integers(min_value=-5, max_value=10_000))
def test_backoff_is_bounded_for_any_attempt_count(attempts: int) -> None:
    assert S.backoff_base_s <= policy.backoff_s(attempts, S) <= S.backoff_max_s


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, "delivered"), (202, "delivered"), (204, "delivered"), (301, "delivered"), (302, "delivered"),
        (400, "drop"), (401, "drop"), (403, "drop"), (404, "drop"), (409, "drop"),
        (405, "retry"), (410, "retry"), (422, "retry"), (429, "retry"),
        (500, "retry"), (502, "retry"), (503, "retry"), (504, "retry"), (599, "retry"),
        (None, "retry"),
    ],
)  # fmt: skip
def test_verdicts(status: int | None, verdict: str) -> None:
    assert policy.verdict(status, S) == verdict


def test_drop_statuses_are_configurable() -> None:
    assert policy.verdict(410, replace(S, drop_statuses=frozenset({410}))) == "drop"
    assert policy.verdict(404, replace(S, drop_statuses=frozenset({410}))) == "retry"


def test_a_failed_attempt_is_retried_after_the_backoff() -> None:
    assert policy.after_attempt(0, 10, Attempt(500), NOW, S) == Retry(NOW + 3 * 1.4 * MINUTE)
    assert policy.after_attempt(3, 10, Attempt(None, "timeout"), NOW, S) == Retry(NOW + policy.backoff_s(4, S))


def test_success_and_drop() -> None:
    assert policy.after_attempt(9, 10, Attempt(200), NOW, S) == Delivered()
    assert policy.after_attempt(0, 10, Attempt(404), NOW, S) == Dead("dropped")


def test_the_tenth_failure_makes_a_dead_letter_at_once() -> None:
    assert isinstance(policy.after_attempt(8, 10, Attempt(500), NOW, S), Retry)
    assert policy.after_attempt(9, 10, Attempt(500), NOW, S) == Dead("max_attempts")


def test_a_failure_past_the_maximum_age_makes_a_dead_letter() -> None:
    assert policy.after_attempt(1, 3 * 86400, Attempt(503), NOW, S) == Dead("expired")


def test_before_send() -> None:
    assert policy.before_send(0, 10, S) is None
    assert policy.before_send(9, 3 * 86400 - 1, S) is None
    assert policy.before_send(0, 3 * 86400, S) == Dead("expired")
    assert policy.before_send(10, 10, S) == Dead("max_attempts")  # e.g. max_attempts lowered meanwhile


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_lengthens_the_backoff_on_429_and_503(status: int) -> None:
    longer = policy.after_attempt(0, 10, Attempt(status, retry_after_s=1800), NOW, S)
    assert longer == Retry(NOW + 1800)
    shorter = policy.after_attempt(0, 10, Attempt(status, retry_after_s=1), NOW, S)
    assert shorter == Retry(NOW + policy.backoff_s(1, S))  # never sooner than the backoff


def test_retry_after_is_capped_and_ignored_on_other_statuses() -> None:
    assert policy.after_attempt(0, 10, Attempt(429, retry_after_s=10**9), NOW, S) == Retry(NOW + S.retry_after_max_s)
    assert policy.after_attempt(0, 10, Attempt(500, retry_after_s=1800), NOW, S) == Retry(NOW + policy.backoff_s(1, S))


def test_parse_retry_after() -> None:
    assert policy.parse_retry_after(None, NOW) is None
    assert policy.parse_retry_after("120", NOW) == 120.0
    assert policy.parse_retry_after(" 7 ", NOW) == 7.0
    http_date = format_datetime(datetime.fromtimestamp(NOW + 90, UTC), usegmt=True)
    assert policy.parse_retry_after(http_date, NOW) == pytest.approx(90)
    past = format_datetime(datetime.fromtimestamp(NOW - 90, UTC), usegmt=True)
    assert policy.parse_retry_after(past, NOW) == 0.0
    assert policy.parse_retry_after("9" * 400, NOW) == 10**11
    for garbage in ("", "soon", "-5", "1.5", "Wed, 99 Foo 2024", "²", "١٢"):
        assert policy.parse_retry_after(garbage, NOW) is None


@given(st.text(max_size=40))
def test_parse_retry_after_never_raises(value: str) -> None:
    parsed = policy.parse_retry_after(value, NOW)
    assert parsed is None or parsed >= 0


@pytest.mark.parametrize(
    ("kind", "status", "verdict"),
    [
        ("slack", 200, "delivered"), ("slack", 404, "dead"), ("slack", 410, "dead"), ("slack", 429, "retry"),
        ("slack", 500, "retry"), ("slack", None, "retry"),
        ("discord", 204, "delivered"), ("discord", 404, "retry"), ("discord", 401, "dead"), ("discord", 502, "retry"),
    ],
)  # fmt: skip
def test_followup_verdicts(kind: str, status: int | None, verdict: str) -> None:
    assert policy.followup_verdict(kind, status) == verdict


def test_followups_get_a_few_quick_retries() -> None:
    assert policy.followup_next("discord", 0, 1, Attempt(404), NOW, S) == Retry(NOW + 5)
    assert policy.followup_next("discord", 2, 1, Attempt(404), NOW, S) == Dead("max_attempts")
    assert policy.followup_next("slack", 0, 1, Attempt(200), NOW, S) == Delivered()
    assert policy.followup_next("slack", 0, 1, Attempt(403), NOW, S) == Dead("dropped")
    assert policy.followup_next("slack", 0, 1798, Attempt(500), NOW, S) == Dead("expired")
