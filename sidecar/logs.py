"""Logging setup: JSON lines on stderr (one object per record), or plain text for a terminal.

Redaction is a guarantee of the formatter, not a habit of the callers:

1. An ``extra`` field whose name looks sensitive (secret, token, signature, authorization, body,
   password, cookie, key, dsn…) is printed as ``[redacted]``, at any depth of a dict value.
2. The configured secret values (``configure(secrets=…)``, ``secrets_of(settings)``) are replaced
   by ``[redacted]`` wherever they appear: message, arguments, extra fields, tracebacks.

Callers still never pass a request body or headers; the formatter is the safety net.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import IO, Any, Final
from urllib.parse import urlsplit

from sidecar.config import Settings

REDACTED: Final = "[redacted]"
CONTEXT_FIELDS: Final = ("request_id", "provider", "decision", "region", "reason")
"""Printed right after the message, in this order, when a record carries them."""

SENSITIVE_NAME: Final = re.compile(
    r"secret|token|signature|authori[sz]ation|body|password|passwd|cookie|api[_-]?key|private|credential|dsn"
    r"|database_url|(?:^|[_-])key$",
    re.IGNORECASE,
)
_MIN_SECRET_LENGTH: Final = 4
"""Shorter "secrets" would blank out ordinary words; config never holds such weak ones anyway."""

# Every attribute a LogRecord has on its own: whatever else is on a record came from ``extra``.
_RECORD_ATTRS: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_HANDLER_NAME: Final = "silo-router"


class _Secrets:
    """The secret values to scrub, shared by every formatter so a config reload updates them all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pattern: re.Pattern[str] | None = None

    def set(self, values: Iterable[str | None]) -> None:
        usable = sorted({v for v in values if v and len(v) >= _MIN_SECRET_LENGTH}, key=len, reverse=True)
        pattern = re.compile("|".join(map(re.escape, usable))) if usable else None
        with self._lock:
            self._pattern = pattern

    def scrub(self, text: str) -> str:
        pattern = self._pattern
        return pattern.sub(REDACTED, text) if pattern is not None else text


SECRETS: Final = _Secrets()


def set_secrets(values: Iterable[str | None]) -> None:
    """Replace the secret values to scrub (call again after a config reload)."""
    SECRETS.set(values)


def secrets_of(settings: Settings) -> list[str]:
    """The values in ``settings`` that must never reach a log: provider secrets, the DB password."""
    # Every field of Secrets is a secret: a provider added there is scrubbed without a change here.
    values: list[str | None] = [getattr(settings.secrets, f.name) for f in dataclasses.fields(settings.secrets)]
    if settings.database_url:
        try:
            password = urlsplit(settings.database_url).password
        except ValueError:
            password = None
        values.append(password)
        # A key=value DSN carries it as password=…
        values.extend(re.findall(r"password\s*=\s*'?([^'\s]+)", settings.database_url))
    return [value for value in values if value]


def redact(value: Any, name: str = "") -> Any:
    """``value`` made safe to print: sensitive names blanked, secret values scrubbed, recursively."""
    if name and SENSITIVE_NAME.search(name):
        return REDACTED
    if isinstance(value, str):
        return SECRETS.scrub(value)
    if isinstance(value, bytes | bytearray | memoryview):
        # Bytes are payloads (bodies, signatures): never printed, only measured.
        return f"<{len(value)} bytes>"
    if isinstance(value, Mapping):
        return {SECRETS.scrub(str(k)): redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v) for v in value]
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # NaN is not JSON
    return SECRETS.scrub(str(value))


def _extra(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", request_id?, provider?, decision?, region?, reason?, …}``."""

    def format(self, record: logging.LogRecord) -> str:
        extra = _extra(record)
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": SECRETS.scrub(record.name),
            "message": SECRETS.scrub(record.getMessage()),
        }
        for key in CONTEXT_FIELDS:
            if extra.get(key) is not None:
                out[key] = redact(extra.pop(key), key)
        for key, value in extra.items():
            out[SECRETS.scrub(key)] = redact(value, key)
        if record.exc_info:
            out["exc"] = SECRETS.scrub(self.formatException(record.exc_info))
        if record.stack_info:
            out["stack"] = SECRETS.scrub(self.formatStack(record.stack_info))
        # Every string is scrubbed above, before encoding: scrubbing the encoded line instead could
        # cut through JSON syntax. redact() has already turned odd objects into strings.
        return json.dumps(out, ensure_ascii=False, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """``2026-01-01 12:00:00,000 INFO sidecar.router: message request_id=… provider=…`` for terminals."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extra = _extra(record)
        fields = [f"{key}={redact(extra[key], key)}" for key in CONTEXT_FIELDS if extra.get(key) is not None]
        fields += [f"{key}={redact(value, key)}" for key, value in extra.items() if key not in CONTEXT_FIELDS]
        return SECRETS.scrub(" ".join([text, *fields]))


def configure(
    level: int | str = "INFO",
    json: bool = True,
    secrets: Iterable[str | None] = (),
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Send every logger's records through one redacting handler on ``stream`` (stderr).

    Idempotent: a second call replaces the handler it installed before (and the secrets).
    """
    set_secrets(secrets)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
            handler.close()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def fields(
    request_id: str | None = None,
    provider: str | None = None,
    decision: str | None = None,
    region: str | None = None,
    reason: str | None = None,
) -> dict[str, str]:
    """``extra=`` for a routing log line, with only the fields that are known:
    ``log.info("stored", extra=logs.fields(request_id=rid, provider="slack", decision="store"))``."""
    given = {"request_id": request_id, "provider": provider, "decision": decision, "region": region, "reason": reason}
    return {key: value for key, value in given.items() if value is not None}
