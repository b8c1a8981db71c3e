"""The HTTP request as the core sees it: plain data, no proto, no socket."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl


@dataclass(frozen=True, slots=True)
class Request:
    """One webhook request.

    ``headers`` keys are lower case (Envoy sends them so). ``body`` is None while Envoy has not
    sent it (header phase) and ``b""`` for a request without a body.
    """

    method: str
    path: str
    query: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None

    @classmethod
    def from_target(
        cls, method: str, target: str, headers: Mapping[str, str] | None = None, body: bytes | None = None
    ) -> Request:
        """Build from a request target such as ``/extensions/github/webhook/?a=1``."""
        path, _, query = target.partition("?")
        return cls(method.upper(), path, query, {k.lower(): v for k, v in (headers or {}).items()}, body)

    @property
    def full_path(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def with_body(self, body: bytes) -> Request:
        return Request(self.method, self.path, self.query, self.headers, body)

    def query_params(self) -> list[tuple[str, str]]:
        return parse_qsl(self.query, keep_blank_values=True) if self.query else []

    def query_param(self, name: str) -> str | None:
        for key, value in self.query_params():
            if key == name:
                return value
        return None

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").lower()

    def json(self) -> Any:
        """The body as JSON, or None when it is absent or not JSON (never raises)."""
        return parse_json(self.body)

    def form(self) -> dict[str, str]:
        """The body as an url-encoded form (last value wins); {} when absent or undecodable."""
        if not self.body:
            return {}
        try:
            text = self.body.decode("utf-8")
        except UnicodeDecodeError:
            return {}
        return dict(parse_qsl(text, keep_blank_values=True))


def parse_json(raw: bytes | str | None) -> Any:
    """JSON or None: providers send garbage too, and garbage must never raise in the core."""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def dig(value: Any, *keys: str) -> Any:
    """``value[k1][k2]…`` through dicts only; None as soon as a step is missing or not a dict."""
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def id_text(value: Any) -> str | None:
    """An identifier as the string Sentry stores in ``external_id``: ints and non-empty strings only."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value:
        return value
    return None


def int_or_none(value: Any) -> int | None:
    """A JSON integer (never a bool, which Python counts as an int), else None: bucket keys."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None
