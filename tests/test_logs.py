"""sidecar.logs: JSON lines with the routing fields, and secrets that never reach the output."""

from __future__ import annotations

import io
import json
import logging
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sidecar import config, logs

SECRET = "xoxb-super-secret-signing-value"
DB_PASSWORD = "pg-pass-7f3a9c"


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    """configure() changes the root logger: leave it as the other tests expect it."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        yield
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers
        logs.set_secrets(())


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    handler = logs.configure("DEBUG", json=True, secrets=[SECRET, DB_PASSWORD], stream=out)
    try:
        yield out
    finally:
        logging.getLogger().removeHandler(handler)
        logs.set_secrets(())


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_record_is_one_json_line_with_the_routing_fields(stream: io.StringIO) -> None:
    log = logging.getLogger("sidecar.router")
    log.info("stored %d copies\nof it", 2, extra=logs.fields(request_id="r-1", provider="slack", decision="store"))
    log.warning("plain")
    first, second = lines(stream)
    assert list(first)[:4] == ["ts", "level", "logger", "message"]
    assert first["ts"].endswith("Z")
    assert first["level"] == "info"
    assert first["logger"] == "sidecar.router"
    assert first["message"] == "stored 2 copies\nof it"
    assert (first["request_id"], first["provider"], first["decision"]) == ("r-1", "slack", "store")
    assert "region" not in first and "reason" not in first
    assert set(second) == {"ts", "level", "logger", "message"}


def test_fields_named_like_secrets_are_never_printed(stream: io.StringIO) -> None:
    logging.getLogger("t").info(
        "x",
        extra={
            "slack_signature": "v0=abcdef",
            "token": "tok-123",
            "body": b'{"event": "private"}',
            "request_body": "raw text body",
            "headers": {"Authorization": "Bearer abc.def", "User-Agent": "GitHub-Hookshot", "Cookie": "c=1"},
            "discord_public_key": "ed25519-hex",
            "region": "us",
            "reason": "async_event",
        },
    )
    text = stream.getvalue()
    for leaked in ("abcdef", "tok-123", "private", "raw text body", "Bearer", "c=1", "ed25519-hex"):
        assert leaked not in text
    (line,) = lines(stream)
    assert line["headers"] == {"Authorization": "[redacted]", "User-Agent": "GitHub-Hookshot", "Cookie": "[redacted]"}
    assert line["body"] == line["token"] == "[redacted]"
    assert (line["region"], line["reason"]) == ("us", "async_event")


def test_configured_secret_values_are_scrubbed_everywhere(stream: io.StringIO) -> None:
    log = logging.getLogger(f"t.{SECRET}")
    try:
        raise ValueError(f"bad signature with {SECRET}")
    except ValueError:
        log.exception("failed for %s at postgres://u:%s@db/x", SECRET, DB_PASSWORD, extra={"note": [SECRET], SECRET: 1})
    log.info("n", stack_info=True, extra={"nested": {"deeper": {"value": f"pre{SECRET}post"}}})
    text = stream.getvalue()
    assert SECRET not in text and DB_PASSWORD not in text
    first, second = lines(stream)
    assert first["message"] == "failed for [redacted] at postgres://u:[redacted]@db/x"
    assert "ValueError: bad signature with [redacted]" in first["exc"]
    assert second["nested"] == {"deeper": {"value": "pre[redacted]post"}}


def test_text_mode_redacts_too() -> None:
    out = io.StringIO()
    handler = logs.configure("INFO", json=False, secrets=[SECRET], stream=out)
    try:
        logging.getLogger("t").info("saw %s", SECRET, extra={"provider": "slack", "signature": "v0=1"})
    finally:
        logging.getLogger().removeHandler(handler)
        logs.set_secrets(())
    text = out.getvalue()
    assert "saw [redacted] provider=slack signature=[redacted]" in text
    assert SECRET not in text


def test_secrets_of_settings_includes_provider_secrets_and_the_database_password(tmp_path: Path) -> None:
    settings = config.from_mapping(
        {"secrets": {"slack_signing_secret": SECRET}},
        {"DATABASE_URL": f"postgresql://silo:{DB_PASSWORD}@db:5432/silo", "SILO_ROUTER_DISCORD_PUBLIC_KEY": "abcd1234"},
        tmp_path,
    )
    assert set(logs.secrets_of(settings)) == {SECRET, DB_PASSWORD, "abcd1234"}
    keyword = config.from_mapping({}, {"DATABASE_URL": f"host=db password={DB_PASSWORD} dbname=x"}, tmp_path)
    assert logs.secrets_of(keyword) == [DB_PASSWORD]


def test_configure_is_idempotent() -> None:
    before = list(logging.getLogger().handlers)
    first = logs.configure("INFO", stream=io.StringIO())
    second = logs.configure("WARNING", stream=io.StringIO())
    try:
        ours = [h for h in logging.getLogger().handlers if h not in before]
        assert ours == [second] and first not in logging.getLogger().handlers
        assert logging.getLogger().level == logging.WARNING
    finally:
        logging.getLogger().removeHandler(second)


SAFE = string.ascii_letters + string.digits + "!\"#$%&'()*+,-./:;<=>?@\\^_`{|}~ é\n\t"
"""No '[' or ']': a secret made of them could be spelled by the redaction marker and its neighbours."""


@settings(max_examples=60, deadline=None)
@given(
    secret=st.text(SAFE, min_size=6, max_size=40),
    before=st.text(SAFE, max_size=10),
    after=st.text(SAFE, max_size=10),
)
def test_property_a_configured_secret_never_survives(secret: str, before: str, after: str) -> None:
    assume(secret not in logs.REDACTED)
    out = io.StringIO()
    handler = logs.configure("INFO", secrets=[secret], stream=out)
    try:
        logging.getLogger("prop").info(before + secret + after, extra={"provider": secret, "other": [before + secret]})
    finally:
        logging.getLogger().removeHandler(handler)
        logs.set_secrets(())
    (line,) = (json.loads(text) for text in out.getvalue().splitlines())
    structural = {"ts", "level", "logger", "message", "provider", "other", "info", "prop", line["ts"]}
    assume(not any(secret in word for word in structural))
    assert not [text for text in strings(line) if secret in text]


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)
