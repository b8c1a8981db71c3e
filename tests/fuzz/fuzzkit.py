"""Fuzzing kit: profiles, an input counter, and provider-aware request strategies.

Profiles (``HYPOTHESIS_PROFILE``): ``ci`` (default, seconds, part of ``make test``) and ``fuzz``
(``make fuzz``: the long run). Each test asks for ``budget(n)``: ``n`` examples in the fuzz
profile, a small fraction of it in ``ci``.

Requests are built the way providers send them, then bent: paths from every view's own pattern
(with hostile path parameters), JSON and form bodies with identifiers of every type, headers from
a pool, byte-level mutations. Slack, Discord, Jira and Jira Server requests are *validly signed*
most of the time, so the fuzzer gets past the signature checks into the parsers behind them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import random
import re
import string
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from sidecar.core import Context, Request, Secrets, ShedRule
from sidecar.core import jwt as core_jwt
from sidecar.core.providers import PROVIDERS

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
CI_SHARE = 0.003
"""In ``ci`` each test runs this share of its fuzz budget (at least 50 examples)."""
SCALE = float(os.environ.get("SILO_FUZZ_SCALE", "1"))
"""Multiplies every fuzz budget (``SILO_FUZZ_SCALE=0.1 make fuzz`` for a quick look)."""
FIGURES_DIR = Path(os.environ.get("SILO_FIGURES_DIR", Path(__file__).resolve().parents[2] / "build" / "reliability"))

settings.register_profile(
    "ci", deadline=None, suppress_health_check=list(HealthCheck), print_blob=True, derandomize=False
)
settings.register_profile(
    "fuzz", deadline=None, suppress_health_check=list(HealthCheck), print_blob=True, database=None
)


def budget(fuzz_examples: int) -> settings:
    """Settings for a fuzz test: ``fuzz_examples`` in the fuzz profile, a small share in ci."""
    examples = int(fuzz_examples * SCALE) if PROFILE == "fuzz" else max(50, int(fuzz_examples * CI_SHARE))
    return settings(settings.get_profile("fuzz" if PROFILE == "fuzz" else "ci"), max_examples=examples)


# --- counting what actually ran ---------------------------------------------------------------------

COUNTS: Counter[str] = Counter()
_LOCK = threading.Lock()
STARTED = time.monotonic()


def tried(name: str, n: int = 1) -> None:
    """Count ``n`` inputs fed to ``name`` (every call of the test body, shrinking included)."""
    with _LOCK:
        COUNTS[name] += n


# --- secrets the fuzzed requests are signed with ----------------------------------------------------

SLACK_SECRET = "fuzz-slack-signing-secret"
SLACK_STAGING_SECRET = "fuzz-slack-staging-secret"
DISCORD_KEY = Ed25519PrivateKey.generate()
DISCORD_PUBLIC_HEX = DISCORD_KEY.public_key().public_bytes_raw().hex()
JIRA_SHARED_SECRET = "fuzz-jira-shared-secret-0123456789abcdef"
JIRA_SERVER_SECRET = "fuzz-jira-server-webhook-secret-abcdef"
NOW = 1_700_000_000.0
REGIONS = frozenset({"us", "de"})

CONTEXTS = [
    Context(
        now=NOW,
        secrets=Secrets(
            slack_signing_secret=SLACK_SECRET,
            slack_staging_signing_secret=SLACK_STAGING_SECRET,
            discord_public_key=DISCORD_PUBLIC_HEX,
        ),
        regions=REGIONS,
        jira_audience="https://hooks.example.com",
    ),
    Context(
        now=NOW,
        secrets=Secrets(slack_verification_token="legacy-token", discord_public_key=DISCORD_PUBLIC_HEX),
        regions=REGIONS,
        shed=(ShedRule("github", 10), ShedRule("gitlab")),
    ),
]

# --- identifiers and JSON values -------------------------------------------------------------------

HOSTILE_TEXT = [
    "", " ", "0", "-1", "1.0", "1e3", "99999999999999999999999", "\x00", "\ud800", "' OR '1'='1", "%00", "%2F",
    "..", "\n", "é", "🔥", "a" * 300, "null", "true", "[]", "{}", "T1\x00",
]  # fmt: skip
KNOWN_IDS: list[Any] = [1, 2, 3, "1", "2", "3", "T1", "T2", "G1", "c1", "inst-1", "jira:c1", "i1:g1", "ghe:1"]

ids: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(KNOWN_IDS),
    st.sampled_from(HOSTILE_TEXT),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=12),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10) | ids,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
path_params = st.one_of(
    st.sampled_from(["1", "2", "3", "90", "0", "-1", "99999999999999999999", "abc", "github-com", "%2F", "%00"]),
    # surrogates included: a Request can hold any str (the jwt.query_hash crash was a lone surrogate)
    st.text(alphabet=st.characters(exclude_characters="/?#", exclude_categories=()), min_size=1, max_size=20),
)

# --- paths -----------------------------------------------------------------------------------------

_GROUP = re.compile(r"\(\?P<(\w+)>([^)]*)\)")
VIEWS = [(spec, view) for spec in PROVIDERS.values() for view in spec.views]
DECIDING_VIEWS = [(spec, view) for spec, view in VIEWS if view.handler is not None]
"""Views with a parser: four in five generated paths aim at one (control-only views are one line each)."""


@st.composite
def view_paths(draw: st.DrawFn) -> tuple[str, str, str]:
    """(provider name, view name, a path for that view) with drawn path parameters."""
    spec, view = draw(st.sampled_from(DECIDING_VIEWS if draw(st.integers(0, 4)) else VIEWS))
    if view.pattern == ".*":
        rest = draw(st.text(alphabet="abc/-_.%", max_size=20))
    else:

        def fill(found: re.Match[str]) -> str:
            literal = found.group(2)
            if literal == "[^/]+":
                return draw(path_params)
            return literal

        rest = _GROUP.sub(fill, view.pattern)
        if spec.name == "jira_server" and view.name == "issue-updated":
            rest = "issue-updated/" + draw(jira_server_tokens()) + "/"
    return spec.name, view.name, spec.prefix + rest


@st.composite
def bent_paths(draw: st.DrawFn) -> str:
    """A view's path, perhaps bent: trailing slash lost or doubled, case changed, segments added."""
    _, _, path = draw(view_paths())
    match draw(st.integers(0, 9)):
        case 0:
            path = path.rstrip("/")
        case 1:
            path += "/"
        case 2:
            path = path.upper()
        case 3:
            path += draw(st.sampled_from(["x/", "../", "./", "%2e%2e/", ";a=b"]))
        case 4:
            path = path.replace("/", "//", 1)
        case _:
            pass
    return path


# --- tokens ----------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(claims: Mapping[str, Any], secret: str, header: Mapping[str, Any] | None = None) -> str:
    head = _b64(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    signature = _b64(hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{signature}"


@st.composite
def jira_server_tokens(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return hs256({"id": draw(ids)}, JIRA_SERVER_SECRET)
    if kind == 1:
        return hs256({"id": draw(ids), "exp": draw(st.integers(0, 2 * int(NOW)))}, draw(st.text(max_size=8)))
    if kind == 2:
        return draw(st.text(alphabet="abcXYZ019-_.", max_size=60)) or "x"
    return quote(draw(st.text(max_size=20)), safe="") or "x"


@st.composite
def jira_tokens(draw: st.DrawFn, method: str, path: str, query: str) -> str:
    req = Request(method, path, query)
    qsh = core_jwt.query_hash(method, path, req.query_params())
    claims: dict[str, Any] = {"iss": draw(st.one_of(st.sampled_from(["jira:c1", "jira:c2"]), ids)), "qsh": qsh}
    if draw(st.booleans()):
        claims["exp"] = NOW + draw(st.integers(-600, 600))
    if draw(st.booleans()):
        claims["qsh"] = draw(st.sampled_from(["context-qsh", "", qsh[:-1]]))
    header: dict[str, Any] = {"alg": draw(st.sampled_from(["HS256", "HS256", "none", "RS256", "HS512"])), "typ": "JWT"}
    if draw(st.integers(0, 4)) == 0:
        header["kid"] = draw(st.one_of(st.text(max_size=8), ids))
    secret = draw(st.sampled_from([JIRA_SHARED_SECRET, JIRA_SHARED_SECRET, "wrong"]))
    token = hs256(claims, secret, header)
    if draw(st.integers(0, 5)) == 0:
        token = token[: draw(st.integers(0, len(token)))]
    return token


# --- bodies and headers per provider ---------------------------------------------------------------

GITHUB_EVENTS = ["push", "issues", "check_run", "check_suite", "installation", "ping", "pull_request", "", "PUSH"]


def _json(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


@st.composite
def provider_payload(draw: st.DrawFn, provider: str) -> tuple[dict[str, str], bytes]:
    """Headers and body shaped like ``provider``'s webhooks, with drawn identifiers."""
    headers: dict[str, str] = {}
    if draw(st.integers(0, 5)):
        headers["content-type"] = "application/json"
    match provider:
        case "github" | "github_enterprise":
            headers["x-github-event"] = draw(st.sampled_from(GITHUB_EVENTS))
            if draw(st.booleans()):
                headers["x-github-enterprise-host"] = draw(st.sampled_from(["ghe", "", "ghe.example.com"]))
            pulls = draw(
                st.lists(
                    st.fixed_dictionaries(
                        {"base": st.fixed_dictionaries({"repo": st.fixed_dictionaries({"id": ids})})}
                    ),
                    max_size=2,
                )
            )
            body = {
                "installation": {"id": draw(ids)},
                "repository": {"id": draw(ids)},
                "action": draw(st.sampled_from(["completed", "requested_action", "created", None])),
                "check_run": {"pull_requests": pulls},
            }
            return headers, _json(body)
        case "slack" | "slack_staging":
            return headers, draw(slack_bodies())
        case "discord":
            body = {
                "type": draw(st.one_of(st.integers(0, 6), st.booleans(), st.text(max_size=2))),
                "guild_id": draw(ids),
                "application_id": draw(ids),
                "token": draw(st.one_of(st.sampled_from(["tok.en-_1", "a..b", "x" * 1100]), ids)),
                "data": draw(json_values),
            }
            return headers, _json(body)
        case "jira" | "jira_server":
            body = {"issue": {"id": draw(ids)}, "changelog": draw(json_values)}
            return headers, _json(body)
        case "gitlab":
            parts = draw(st.lists(st.sampled_from(["i1", "g1", "s", "", ":"]), max_size=4))
            if draw(st.integers(0, 5)):
                headers["x-gitlab-token"] = ":".join(parts)
            body = {"object_kind": draw(st.sampled_from(["push", "note", "x", ""])), "project": {"id": draw(ids)}}
            return headers, _json(body)
        case "msteams":
            body = {
                "type": draw(st.sampled_from(["message", "installationUpdate", "", None])),
                "action": draw(st.sampled_from(["add", "remove", None])),
                "channelData": {"team": {"id": draw(ids)}, "tenant": {"id": draw(ids)}},
                "value": {"payload": {"integrationId": draw(ids)}},
            }
            return headers, _json(body)
        case "vsts":
            body = {"resourceContainers": {"collection": {"id": draw(ids)}}, "resource": {"workItemId": draw(ids)}}
            return headers, _json(body)
        case "cursor_origin":
            headers["webhook-event-type"] = draw(
                st.sampled_from(["push", "pull_request.opened", "ping", "installation.created", "x"])
            )
            headers["webhook-installation-id"] = draw(st.sampled_from(["inst-1", "", "x"]))
            headers["webhook-id"] = draw(st.sampled_from(["msg_1", ""]))
            headers["webhook-timestamp"] = str(int(NOW) + draw(st.integers(-400, 400)))
            headers["webhook-signature"] = draw(st.sampled_from(["v1,eHg=", "v1,!!", "v2,eHg=", "", "v1,eHg= v1,"]))
            return headers, _json({"payload": {"repository": {"id": draw(ids)}}})
        case _:
            return headers, _json(draw(json_values))


@st.composite
def slack_bodies(draw: st.DrawFn) -> bytes:
    team = draw(ids)
    shape = draw(st.integers(0, 3))
    if shape == 0:
        return _json({"type": draw(st.sampled_from(["event_callback", "url_verification"])), "team_id": team})
    actions = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "action_id": st.sampled_from(["link_identity", "x::1", "a::2::3", "b::99999999999999999999", ""]),
                    "value": st.sampled_from(["link", "ignore", "resolve", "", "all_slack"]),
                }
            ),
            max_size=3,
        )
    )
    payload = {
        "team": {"id": team},
        "actions": actions,
        "response_url": draw(st.sampled_from(["https://hooks.slack.com/x", "ftp://x", "http://[x", "", None])),
        "token": draw(st.sampled_from(["legacy-token", "other", ""])),
    }
    if shape == 1:
        return ("payload=" + quote(json.dumps(payload, allow_nan=True).encode("utf-8", "surrogatepass"))).encode()
    if shape == 2:
        text = draw(st.sampled_from(["link team acme", "unlink team Globex", "help", ""]))
        team_text = team if isinstance(team, str) else json.dumps(team)
        team_field = quote(team_text.encode("utf-8", "surrogatepass"))
        return f"team_id={team_field}&text={quote(text)}&token=legacy-token".encode()
    return draw(st.binary(max_size=80))


def mutate(data: bytes, draw: st.DrawFn) -> bytes:
    """A byte-level mutation: flip, truncate, insert or duplicate a slice."""
    if not data:
        return draw(st.binary(max_size=16))
    match draw(st.integers(0, 4)):
        case 0:
            i = draw(st.integers(0, len(data) - 1))
            return data[:i] + bytes([data[i] ^ (1 << draw(st.integers(0, 7)))]) + data[i + 1 :]
        case 1:
            return data[: draw(st.integers(0, len(data)))]
        case 2:
            i = draw(st.integers(0, len(data)))
            return data[:i] + draw(st.binary(min_size=1, max_size=8)) + data[i:]
        case 3:
            i, j = sorted(draw(st.tuples(st.integers(0, len(data)), st.integers(0, len(data)))))
            return data[:j] + data[i:j] + data[j:]
        case _:
            return data


def slack_signed(secret: str, body: bytes, skew: int) -> dict[str, str]:
    timestamp = str(int(NOW) + skew)
    digest = hmac.new(secret.encode(), b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    return {"x-slack-request-timestamp": timestamp, "x-slack-signature": "v0=" + digest}


def discord_signed(body: bytes) -> dict[str, str]:
    timestamp = str(int(NOW))
    return {
        "x-signature-timestamp": timestamp,
        "x-signature-ed25519": DISCORD_KEY.sign(timestamp.encode() + body).hex(),
    }


@st.composite
def webhook_requests(draw: st.DrawFn) -> Request:
    """A request shaped like some provider's webhook, perhaps bent, usually validly signed."""
    provider, _view, path = draw(view_paths())
    if draw(st.integers(0, 9)) == 0:
        path = draw(bent_paths())
    headers, body = draw(provider_payload(provider))
    if draw(st.integers(0, 4)) == 0:
        body = mutate(body, draw)
    query = draw(st.sampled_from(["", "", "a=1", "jwt=", "a=%ZZ&b", "x-silo-route=de"]))
    method = draw(st.sampled_from(["POST", "POST", "GET", "PUT", "post"]))
    if provider in ("slack", "slack_staging") and draw(st.integers(0, 4)):
        secret = SLACK_SECRET if provider == "slack" else SLACK_STAGING_SECRET
        headers |= slack_signed(secret, body, draw(st.sampled_from([0, 0, -299, 301, -10_000])))
    if provider == "discord" and draw(st.integers(0, 4)):
        headers |= discord_signed(body)
    if provider == "jira" and draw(st.integers(0, 5)):
        token = draw(jira_tokens(method.upper(), path, query))
        if draw(st.booleans()):
            headers["authorization"] = draw(st.sampled_from(["JWT ", "Bearer ", "JWT  ", ""])) + token
        else:
            query = (query + "&" if query else "") + "jwt=" + token
    if draw(st.integers(0, 3)) == 0:
        extra = draw(st.dictionaries(st.sampled_from(HEADER_POOL), st.text(max_size=30), max_size=4))
        headers |= extra
    if draw(st.integers(0, 6)) == 0:
        body_or_none: bytes | None = None  # the header phase of a body view
    else:
        body_or_none = body
    return Request(method.upper(), path, query, headers, body_or_none)


HEADER_POOL = [
    "content-type", "x-github-event", "x-github-enterprise-host", "x-gitlab-token", "authorization",
    "x-slack-signature", "x-slack-request-timestamp", "x-signature-ed25519", "x-signature-timestamp",
    "webhook-installation-id", "webhook-event-type", "webhook-id", "webhook-timestamp", "webhook-signature",
    "x-silo-route", "x-request-id", ":path", ":method",
]  # fmt: skip

Check = Callable[[Any], None]


# --- a second generator, driven by any byte source (random seeds, atheris) ------------------------------


class Source(Protocol):
    """Where generated inputs take their choices from: a seeded PRNG, or atheris' data provider."""

    def integer(self, lo: int, hi: int) -> int: ...

    def text(self, max_len: int) -> str: ...

    def binary(self, max_len: int) -> bytes: ...


class RandomSource:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def text(self, max_len: int) -> str:
        size = self.rng.randint(0, max_len)
        alphabet = self.rng.choice([string.printable, "abc019/:._-%", "\x00\ud800é🔥'\"\\ \n"])
        return "".join(self.rng.choice(alphabet) for _ in range(size))

    def binary(self, max_len: int) -> bytes:
        return self.rng.randbytes(self.rng.randint(0, max_len))


T = TypeVar("T")


def pick(src: Source, options: Sequence[T]) -> T:
    return options[src.integer(0, len(options) - 1)]


def chance(src: Source, one_in: int) -> bool:
    return src.integer(1, one_in) == 1


def source_id(src: Source) -> Any:
    match src.integer(0, 9):
        case 0 | 1 | 2 | 8 | 9:
            return pick(src, KNOWN_IDS)
        case 3:
            return pick(src, HOSTILE_TEXT)
        case 4:
            return src.integer(-(2**65), 2**65)
        case 5:
            return src.text(12)
        case 6:
            return pick(src, [None, True, False, 1.5, float("inf"), [], {}, [1], {"id": 1}])
        case _:
            return src.integer(0, 5)


def source_payload(src: Source, provider: str) -> tuple[dict[str, str], bytes]:
    headers: dict[str, str] = {"content-type": "application/json"} if not chance(src, 6) else {}
    match provider:
        case "github" | "github_enterprise":
            headers["x-github-event"] = pick(src, ["push", "issues", *GITHUB_EVENTS])
            if chance(src, 2):
                headers["x-github-enterprise-host"] = pick(src, ["ghe", "", "ghe.example.com"])
            body: Any = {
                "installation": {"id": source_id(src)},
                "repository": {"id": source_id(src)},
                "action": pick(src, ["completed", "requested_action", "created", None]),
                "check_run": {"pull_requests": [{"base": {"repo": {"id": source_id(src)}}}] * src.integer(0, 2)},
            }
        case "slack" | "slack_staging":
            team = source_id(src)
            shape = src.integer(0, 3)
            if shape == 0:
                body = {"type": pick(src, ["event_callback", "url_verification"]), "team_id": team}
            else:
                payload = {
                    "team": {"id": team},
                    "actions": [
                        {"action_id": pick(src, ["link_identity", "x::1", "a::2::3", ""]),
                         "value": pick(src, ["link", "ignore", "resolve", ""])}
                        for _ in range(src.integer(0, 2))
                    ],
                    "response_url": pick(src, ["https://hooks.slack.com/x", "ftp://x", "http://[x", "", None]),
                    "token": pick(src, ["legacy-token", "other"]),
                }  # fmt: skip
                text = json.dumps(payload).encode()
                if shape == 1:
                    return headers, b"payload=" + quote(text).encode()
                team_text = team if isinstance(team, str) else json.dumps(team)
                form = f"team_id={quote(team_text.encode('utf-8', 'surrogatepass'))}&text=link%20team%20acme"
                return headers, form.encode()
        case "discord":
            body = {
                "type": pick(src, [1, 2, 3, 4, 5, True, "2", 0]),
                "guild_id": source_id(src),
                "application_id": source_id(src),
                "token": pick(src, ["tok.en-_1", "a..b", "x" * 1100, None, 5]),
            }
        case "jira" | "jira_server":
            body = {"issue": {"id": source_id(src)}, "changelog": pick(src, [None, {}, {"items": [1]}, "x"])}
        case "gitlab":
            if not chance(src, 6):
                headers["x-gitlab-token"] = ":".join(pick(src, ["i1", "g1", "s", ""]) for _ in range(src.integer(0, 4)))
            body = {"object_kind": pick(src, ["push", "note", "x", ""]), "project": {"id": source_id(src)}}
        case "msteams":
            body = {
                "type": pick(src, ["message", "installationUpdate", "", None]),
                "action": pick(src, ["add", None]),
                "channelData": {"team": {"id": source_id(src)}, "tenant": {"id": source_id(src)}},
                "value": {"payload": {"integrationId": source_id(src)}},
            }
        case "vsts":
            body = {
                "resourceContainers": {"collection": {"id": source_id(src)}},
                "resource": {"workItemId": source_id(src)},
            }
        case "cursor_origin":
            headers["webhook-event-type"] = pick(src, ["push", "pull_request.opened", "ping", "installation.x", "x"])
            headers["webhook-installation-id"] = pick(src, ["inst-1", "", "x"])
            headers["webhook-id"] = pick(src, ["msg_1", ""])
            headers["webhook-timestamp"] = str(int(NOW) + src.integer(-400, 400))
            headers["webhook-signature"] = pick(src, ["v1,eHg=", "v1,!!", "v2,eHg=", ""])
            body = {"payload": {"repository": {"id": source_id(src)}}}
        case _:
            body = {"x": source_id(src)}
    return headers, json.dumps(body).encode("utf-8", "surrogatepass")


def source_path(src: Source) -> tuple[str, str]:
    """(provider, path) for one of the views, parameters filled from ``src``."""
    spec, view = pick(src, DECIDING_VIEWS if src.integer(0, 4) else VIEWS)
    if view.pattern == ".*":
        return spec.name, spec.prefix + src.text(20).replace("?", "")

    def fill(found: re.Match[str]) -> str:
        if found.group(2) != "[^/]+":
            return found.group(2)
        if chance(src, 3):
            value = src.text(16)
            return "".join(c for c in value if c not in "/?#") or "x"
        return pick(src, ["1", "2", "3", "90", "0", "-1", "99999999999999999999", "abc", "%2F", "%00"])

    rest = _GROUP.sub(fill, view.pattern)
    if spec.name == "jira_server" and view.name == "issue-updated":
        claims = {"id": source_id(src)} if not chance(src, 4) else {"id": "1", "exp": 1}
        token = hs256(claims, JIRA_SERVER_SECRET if not chance(src, 3) else "wrong")
        rest = "issue-updated/" + (token if not chance(src, 5) else token[: src.integer(0, len(token))] or "x") + "/"
    path = spec.prefix + rest
    match src.integer(0, 30):
        case 0:
            path = path.rstrip("/")
        case 1:
            path = path.upper()
        case 2:
            path += pick(src, ["x/", "../", "%2e%2e/", ";a=b", "/"])
        case _:
            pass
    return spec.name, path


def source_request(src: Source) -> Request:
    provider, path = source_path(src)
    headers, body = source_payload(src, provider)
    if chance(src, 5):
        body = source_mutate(src, body)
    query = pick(src, ["", "", "a=1", "jwt=", "a=%ZZ&b", "x-silo-route=de"])
    method = pick(src, ["POST", "POST", "POST", "GET", "PUT"])
    if provider in ("slack", "slack_staging") and not chance(src, 5):
        secret = SLACK_SECRET if provider == "slack" else SLACK_STAGING_SECRET
        headers |= slack_signed(secret, body, pick(src, [0, 0, -299, 301]))
    if provider == "discord" and not chance(src, 5):
        headers |= discord_signed(body)
    if provider == "jira" and not chance(src, 6):
        qsh = core_jwt.query_hash(method, path, Request(method, path, query).query_params())
        claims: dict[str, Any] = {
            "iss": pick(src, ["jira:c1", "jira:c2", ""]),
            "qsh": qsh if not chance(src, 4) else "x",
        }
        if chance(src, 2):
            claims["exp"] = NOW + src.integer(-600, 600)
        header = {"alg": pick(src, ["HS256", "HS256", "none", "RS256"])} | ({"kid": "k"} if chance(src, 5) else {})
        token = hs256(claims, JIRA_SHARED_SECRET if not chance(src, 4) else "wrong", header)
        if chance(src, 2):
            headers["authorization"] = "JWT " + token
        else:
            query = (query + "&" if query else "") + "jwt=" + token
    if chance(src, 4):
        headers[pick(src, HEADER_POOL)] = src.text(30)
    return Request(method, path, query, headers, None if chance(src, 8) else body)


def source_mutate(src: Source, data: bytes) -> bytes:
    if not data:
        return src.binary(16)
    i = src.integer(0, len(data) - 1)
    match src.integer(0, 3):
        case 0:
            return data[:i] + bytes([data[i] ^ (1 << src.integer(0, 7))]) + data[i + 1 :]
        case 1:
            return data[:i]
        case 2:
            return data[:i] + src.binary(8) + data[i:]
        case _:
            return data[:i] + data[i:] * 2


# --- the ext_proc servicer, fed whole message sequences ------------------------------------------------

SERVICER_DIRECTORY: dict[str, Any] = {
    "organizations": [
        {"id": 1, "slug": "acme", "region": "us"},
        {"id": 2, "slug": "globex", "region": "de"},
        {"id": 3, "slug": "zed", "region": "zz"},
    ],
    "integrations": [
        {"id": 10, "provider": "github", "external_id": "1", "organizations": [1]},
        {"id": 11, "provider": "github", "external_id": "2", "organizations": [1, 2]},
        {"id": 12, "provider": "github", "external_id": "3", "organizations": [3]},
        {"id": 13, "provider": "github_enterprise", "external_id": "ghe:1", "organizations": [2]},
        {"id": 20, "provider": "slack", "external_id": "T1", "organizations": [1]},
        {"id": 21, "provider": "slack", "external_id": "T2", "organizations": [1, 2]},
        {"id": 22, "provider": "slack_staging", "external_id": "T1", "organizations": [2]},
        {"id": 30, "provider": "discord", "external_id": "1", "organizations": [2]},
        {"id": 31, "provider": "discord", "external_id": "G1", "organizations": [1, 2]},
        {"id": 40, "provider": "jira", "external_id": "jira:c1", "organizations": [1],
         "metadata": {"shared_secret": JIRA_SHARED_SECRET}},
        {"id": 41, "provider": "jira_server", "external_id": "1", "organizations": [2],
         "metadata": {"webhook_secret": JIRA_SERVER_SECRET}},
        {"id": 50, "provider": "gitlab", "external_id": "i1:g1", "organizations": [1]},
        {"id": 60, "provider": "msteams", "external_id": "T1", "organizations": [2]},
        {"id": 61, "provider": "msteams", "external_id": "1", "organizations": [1, 3]},
        {"id": 70, "provider": "vsts", "external_id": "c1", "organizations": [1]},
        {"id": 80, "provider": "cursor_origin", "external_id": "inst-1", "organizations": [2]},
        {"id": 90, "provider": "gitea", "external_id": "x", "organizations": [1]},
    ],
}  # fmt: skip

PHASES = (
    "request_headers",
    "request_body",
    "request_trailers",
    "response_headers",
    "response_body",
    "response_trailers",
)


def headers_message(req: Request, end_of_stream: bool, raw: bool = True) -> Any:
    """``req`` as Envoy sends it: pseudo-headers first, values in ``raw_value`` (or ``value``)."""
    from envoy.config.core.v3 import base_pb2
    from envoy.service.ext_proc.v3 import external_processor_pb2 as ep

    message = ep.ProcessingRequest()
    fields = {":method": req.method, ":path": req.full_path, ":authority": "hooks", **req.headers}
    for key, value in fields.items():
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            continue  # a proto string field cannot hold it: Envoy could never send it
        data = value.encode("utf-8", "surrogatepass")
        try:
            # Envoy 1.40 sends raw_value; ``value`` is what an older Envoy (or a test) might send.
            header = (
                base_pb2.HeaderValue(key=key, raw_value=data) if raw else base_pb2.HeaderValue(key=key, value=value)
            )
        except (ValueError, UnicodeEncodeError):
            header = base_pb2.HeaderValue(key=key, raw_value=data)
        message.request_headers.headers.headers.append(header)
    message.request_headers.end_of_stream = end_of_stream
    return message


def phase_message(phase: str, body: bytes = b"", end_of_stream: bool = True) -> Any:
    from envoy.service.ext_proc.v3 import external_processor_pb2 as ep

    message = ep.ProcessingRequest()
    part = getattr(message, phase)
    if phase in ("request_body", "response_body"):
        part.body = body
        part.end_of_stream = end_of_stream
    else:
        part.SetInParent()
    return message


def source_messages(src: Source) -> list[Any]:
    """A message sequence as Envoy sends it, or bent: body first, duplicates, unknown phases,
    raw bytes, mutated encodings."""
    from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
    from google.protobuf.message import DecodeError

    req = source_request(src)
    body = req.body if req.body is not None else b""
    normal = [headers_message(req, end_of_stream=not body and chance(src, 2), raw=not chance(src, 8))]
    if body or chance(src, 2):
        normal.append(phase_message("request_body", body, end_of_stream=not chance(src, 8)))
    messages: list[Any] = []
    for _ in range(src.integer(1, 3)):
        match src.integer(0, 9):
            case 0:
                messages.append(phase_message(pick(src, PHASES), src.binary(40), chance(src, 2)))
            case 1:
                messages.append(ep.ProcessingRequest())  # no phase at all
            case 2:
                with contextlib.suppress(DecodeError):  # gRPC would never hand such bytes to the servicer
                    messages.append(ep.ProcessingRequest.FromString(src.binary(120)))
            case 3:
                encoded = pick(src, normal).SerializeToString()
                with contextlib.suppress(DecodeError):
                    messages.append(ep.ProcessingRequest.FromString(source_mutate(src, encoded)))
            case 4:
                messages.extend(reversed(normal))  # body before headers
            case 5:
                messages.extend(normal + normal)  # everything twice
            case _:
                messages.extend(normal)
    return messages


class ServicerHarness:
    """The real servicer and Router over the in-memory twins, on one event loop for all examples."""

    def __init__(self) -> None:
        from sidecar.directory.memory import InMemoryDirectory
        from sidecar.outbox.memory import InMemoryOutbox
        from sidecar.router import Router
        from sidecar.wire.servicer import ExternalProcessor

        self.loop = asyncio.new_event_loop()
        self.outbox = InMemoryOutbox()
        self.directory = InMemoryDirectory.from_data(SERVICER_DIRECTORY)
        self.contexts = CONTEXTS
        self.context = CONTEXTS[0]
        self.router = Router(self.directory, self.outbox, lambda: self.context, budget_s=5.0)
        self.servicer = ExternalProcessor(self.router)

    def run(self, messages: Sequence[Any], context_index: int = 0) -> list[Any]:
        self.context = self.contexts[context_index % len(self.contexts)]
        self.outbox.rows.clear()

        from sidecar.wire.stream import MemoryStream

        stream = MemoryStream(messages)
        self.loop.run_until_complete(self.servicer.Process(None, stream))
        return stream.written

    def check(self, messages: Sequence[Any], responses: Sequence[Any]) -> None:
        """One valid answer per message that has a phase, in order, until the stream ends after a final
        answer (to request headers or a request body); routes only to known regions."""
        from envoy.service.ext_proc.v3 import external_processor_pb2 as ep

        phased = [m for m in messages if m.WhichOneof("request") is not None]
        assert len(responses) <= len(phased), (len(responses), len(phased))
        if len(responses) < len(phased):
            assert responses and phased[len(responses) - 1].WhichOneof("request") in ("request_headers", "request_body")
        for message, response in zip(phased[: len(responses)], responses, strict=True):
            phase = message.WhichOneof("request")
            kind = response.WhichOneof("response")
            assert kind in (phase, "immediate_response"), (phase, kind)
            assert ep.ProcessingResponse.FromString(response.SerializeToString()) == response
            if kind == "immediate_response":
                assert 200 <= response.immediate_response.status.code <= 599, response
                continue
            if phase in ("request_headers", "request_body", "response_headers", "response_body"):
                common = getattr(response, phase).response
                routes = [h.header for h in common.header_mutation.set_headers if h.header.key == "x-silo-route"]
                for header in routes:
                    assert phase in ("request_headers", "request_body"), phase
                    assert header.raw_value.decode() in REGIONS and header.value == "", header
                    assert common.clear_route_cache
                assert not common.header_mutation.remove_headers
        for row in self.outbox.rows:
            assert row.region_name in REGIONS, row.region_name
