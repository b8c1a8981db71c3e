"""What to do after a delivery attempt: pure functions of the attempt, the row and the settings.

Sentry's rules (reference §5.1, §5.5), with two changes that lose nothing:

1. A 2xx or 3xx answer is a delivery (redirects are not followed: a POST must not be re-sent elsewhere).
2. 400, 401, 403, 404 and 409 are the region refusing the webhook for good: the row is dropped,
   which here means kept as a dead letter with its status, never deleted.
3. Anything else (5xx, other 4xx, timeouts, connection resets) is retried after
   min(base · rate^attempts, max): 4.2, 5.9, 8.2 … 60 minutes with Sentry's numbers.
4. A region's ``Retry-After`` (on 429 and 503) is honoured: the next attempt is never earlier than
   it asks, up to ``retry_after_max_s``. It only ever lengthens the backoff, so a region answering
   "retry after 1 s" cannot burn the ten attempts in ten seconds.
5. The attempt that fails for the ``max_attempts``-th time makes the row a dead letter at once
   (Sentry deletes it on its next turn, after one more backoff: the mailbox waits for nothing).
6. A row older than ``max_age_s`` is not sent again: it becomes a dead letter (Sentry deletes it,
   in the parallel drain only). Age counts from the last replay, if any.
"""

from __future__ import annotations

import email.utils
from dataclasses import dataclass
from typing import Literal

from sidecar.config import DeliverySettings

Verdict = Literal["delivered", "drop", "retry"]
DeadReason = Literal["dropped", "max_attempts", "expired", "nothing_to_post", "not_allowed"]
"""Follow-ups only: ``nothing_to_post`` (no region answered usable JSON; the follow-up becomes
``skipped``), ``not_allowed`` (a response_url outside the allow-list)."""

REGION_GONE = "egress_unknown_region"
"""Error code for a region the egress listener has no route to (a configuration gap, retried)."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one send produced: a status, or an error code when no answer came."""

    status: int | None
    error: str | None = None
    retry_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class Delivered:
    pass


@dataclass(frozen=True, slots=True)
class Retry:
    at: float
    """Epoch seconds of the next attempt."""


@dataclass(frozen=True, slots=True)
class Dead:
    reason: DeadReason


Next = Delivered | Retry | Dead


def verdict(status: int | None, settings: DeliverySettings) -> Verdict:
    """A region's answer (None: none came) → delivered, drop or retry (rules 1–3)."""
    if status is None:
        return "retry"
    if 200 <= status < 400:
        return "delivered"
    if status in settings.drop_statuses:
        return "drop"
    return "retry"


def backoff_s(attempts: int, settings: DeliverySettings) -> float:
    """The wait after the ``attempts``-th failed attempt (rule 3)."""
    # Past ~30 attempts the power overflows any sane maximum; cap the exponent, not just the result.
    exponent = min(max(attempts, 0), 64)
    return float(min(settings.backoff_base_s * settings.backoff_rate**exponent, settings.backoff_max_s))


def retry_delay_s(attempts: int, attempt: Attempt, settings: DeliverySettings) -> float:
    """Backoff, lengthened to the region's Retry-After when it sent one with 429/503 (rule 4)."""
    delay = backoff_s(attempts, settings)
    if attempt.retry_after_s is not None and attempt.status in settings.retry_after_statuses:
        delay = max(delay, min(attempt.retry_after_s, settings.retry_after_max_s))
    return delay


def expired(age_s: float, settings: DeliverySettings) -> bool:
    return age_s >= settings.max_age_s


def before_send(attempts: int, age_s: float, settings: DeliverySettings) -> Dead | None:
    """A row that must not be sent at all: too old (rule 6), or out of attempts (settings lowered)."""
    if expired(age_s, settings):
        return Dead("expired")
    if attempts >= settings.max_attempts:
        return Dead("max_attempts")
    return None


def after_attempt(attempts_before: int, age_s: float, attempt: Attempt, now: float, settings: DeliverySettings) -> Next:
    """Where a row goes after ``attempt`` (``attempts_before`` counts the earlier ones)."""
    match verdict(attempt.status, settings):
        case "delivered":
            return Delivered()
        case "drop":
            return Dead("dropped")
    attempts = attempts_before + 1
    if attempts >= settings.max_attempts:
        return Dead("max_attempts")
    if expired(age_s, settings):
        return Dead("expired")
    return Retry(now + retry_delay_s(attempts, attempt, settings))


def parse_retry_after(value: str | None, now: float) -> float | None:
    """``Retry-After`` in seconds from ``now``: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():  # not "²", which isdigit() accepts
        return float(min(int(text[:12]), 10**11))  # a year of seconds is plenty; no float overflow
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT by definition
        return None
    return max(when.timestamp() - now, 0.0)


# -- follow-ups (async replies) ---------------------------------------------------------------

FollowupVerdict = Literal["delivered", "retry", "dead"]


def followup_verdict(kind: str, status: int | None) -> FollowupVerdict:
    """Slack and Discord answers to a follow-up post.

    Discord answers 404 for a few moments after the deferred response, until the interaction
    webhook exists (Sentry retries it: "hook not ready"); 429 and 5xx are worth another try;
    any other 4xx (an expired or used response_url, a bad body) will not get better.
    """
    if status is None:
        return "retry"
    if 200 <= status < 300:
        return "delivered"
    if status == 429 or status >= 500 or (kind == "discord" and status == 404):
        return "retry"
    return "dead"


def followup_next(
    kind: str, attempts_before: int, age_s: float, attempt: Attempt, now: float, settings: DeliverySettings
) -> Next:
    """Where a follow-up goes after a post: a few quick retries while the provider still listens."""
    match followup_verdict(kind, attempt.status):
        case "delivered":
            return Delivered()
        case "dead":
            return Dead("dropped")
    if attempts_before + 1 >= settings.followup_max_attempts:
        return Dead("max_attempts")
    delay = settings.followup_retry_s
    if attempt.retry_after_s is not None:
        delay = max(delay, attempt.retry_after_s)
    if age_s + delay >= settings.followup_max_age_s:
        return Dead("expired")
    return Retry(now + delay)
