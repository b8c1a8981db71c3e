"""``sidecar.explain``: raw requests parsed with h11, decisions explained against the in-memory twins."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sidecar.cli import main
from sidecar.core import Context, Secrets
from sidecar.core.verify import slack_v0_signature
from sidecar.directory.loader import load_directory, parse_directory
from sidecar.directory.memory import InMemoryDirectory
from sidecar.explain import (
    Explanation,
    HttpRequestError,
    Parts,
    explain,
    format_explanation,
    parse_http_request,
)
from sidecar.keysource import InMemoryKeySource
from sidecar.outbox.memory import InMemoryOutbox
from sidecar.router import Router

NOW = 1_700_000_000.0
SLACK_SECRET = "explain-test-slack-secret"
AUDIENCE = "https://sentry.example.com"
JIRA_CLIENT_KEY = "a4b3c2d1-0e9f-4a8b-b7c6-d5e4f3a2b1c0"
KID = "0e50fccb-239d-4991-a5db-dc850ba3f236"
DIRECTORY: dict[str, Any] = {
    "organizations": [{"id": 1, "slug": "acme", "region": "us"}, {"id": 2, "slug": "globex", "region": "de"}],
    "integrations": [
        {"id": 10, "provider": "github", "external_id": "4711", "organizations": [1]},
        {"id": 21, "provider": "slack", "external_id": "T0GLOBEX", "organizations": [2]},
        {"id": 30, "provider": "jira", "external_id": JIRA_CLIENT_KEY, "organizations": [1]},
    ],
}


def context(now: float = NOW) -> Context:
    secrets = Secrets(slack_signing_secret=SLACK_SECRET)
    return Context(now=now, secrets=secrets, regions=frozenset({"us", "de"}), jira_audience=AUDIENCE)


def parts(directory: InMemoryDirectory | None = None, **kw: Any) -> Parts:
    return Parts(directory or InMemoryDirectory.from_data(DIRECTORY), context, **kw)


def http(method: str, target: str, headers: dict[str, str], body: bytes = b"", eol: bytes = b"\r\n") -> bytes:
    """A request as an operator pastes it: request line, headers, Content-Length for a body."""
    lines = [f"{method} {target} HTTP/1.1", "Host: hooks.example.com"] + [f"{k}: {v}" for k, v in headers.items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return eol.join(line.encode() for line in lines) + eol + eol + body


GITHUB_PUSH = json.dumps(
    {"ref": "refs/heads/main", "installation": {"id": 4711}, "repository": {"id": 1296269, "name": "hello"}}
).encode()
GITHUB_HEADERS = {"Content-Type": "application/json", "X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=00"}


def slack_event(team_id: str = "T0GLOBEX", now: float = NOW, secret: str = SLACK_SECRET) -> bytes:
    body = json.dumps({"type": "event_callback", "team_id": team_id, "event": {"type": "app_mention"}}).encode()
    timestamp = str(int(now))
    headers = {
        "Content-Type": "application/json",
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": slack_v0_signature(secret, timestamp, body),
    }
    return http("POST", "/extensions/slack/event/", headers, body)


def stage_texts(explanation: Explanation, stage: str) -> list[str]:
    return [step.text for step in explanation.steps if step.stage == stage]


# --- parsing -----------------------------------------------------------------------------------


def test_a_content_length_request_is_parsed_exactly() -> None:
    req = parse_http_request(http("POST", "/extensions/github/webhook/?a=1&b=2", GITHUB_HEADERS, GITHUB_PUSH))
    assert req.method == "POST"
    assert req.path == "/extensions/github/webhook/"
    assert req.query == "a=1&b=2"
    assert req.body == GITHUB_PUSH
    assert req.header("x-github-event") == "push"  # names lower case, as Envoy sends them
    assert req.header("content-length") == str(len(GITHUB_PUSH))


def test_bare_line_feeds_and_a_trailing_newline_after_the_body_are_accepted() -> None:
    raw = http("POST", "/extensions/github/webhook/", GITHUB_HEADERS, GITHUB_PUSH, eol=b"\n") + b"\n"
    assert parse_http_request(raw).body == GITHUB_PUSH


def test_a_request_without_body_needs_no_blank_line() -> None:
    req = parse_http_request(b"GET /extensions/github/installation/4711/ HTTP/1.1\nHost: x")
    assert (req.method, req.path, req.body) == ("GET", "/extensions/github/installation/4711/", b"")


def test_a_chunked_body_is_reassembled() -> None:
    chunks = [GITHUB_PUSH[:10], GITHUB_PUSH[10:]]
    framed = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks) + b"0\r\nX-Trailer: t\r\n\r\n"
    raw = http("POST", "/extensions/github/webhook/", {**GITHUB_HEADERS, "Transfer-Encoding": "chunked"}) + framed
    req = parse_http_request(raw)
    assert req.body == GITHUB_PUSH
    assert req.header("transfer-encoding") == "chunked"


def test_an_absolute_form_target_becomes_the_path() -> None:
    req = parse_http_request(
        b"GET https://hooks.example.com/extensions/slack/link-identity/abc/?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    assert (req.path, req.query) == ("/extensions/slack/link-identity/abc/", "x=1")


def test_a_repeated_header_keeps_its_last_value_as_the_sidecar_does() -> None:
    req = parse_http_request(b"GET / HTTP/1.1\r\nHost: a\r\nX-GitHub-Event: issues\r\nX-GitHub-Event: push\r\n\r\n")
    assert req.header("x-github-event") == "push"


def curl_trace(sent: bytes, *, timed: bool = False, chunk: int = 40) -> bytes:
    """``curl --trace`` output for a request sent as a header block and data blocks (curl's dump format)."""
    head, _, body = sent.partition(b"\r\n\r\n")
    stamp = "12:00:00.000000 " if timed else ""
    out = [f"{stamp}== Info: Connected to hooks.example.com (127.0.0.1) port 80 (#0)"]
    blocks = [("Send header", head + b"\r\n\r\n")]
    blocks += [("Send data", body[i : i + chunk]) for i in range(0, len(body), chunk)]
    blocks += [("Recv header", b"HTTP/1.1 202 Accepted\r\n")]
    for label, data in blocks:
        out.append(f"{stamp}{'<=' if label.startswith('Recv') else '=>'} {label}, {len(data)} bytes (0x{len(data):x})")
        for offset in range(0, len(data), 16):
            row = data[offset : offset + 16]
            text = "".join(chr(b) if 32 <= b < 127 else "." for b in row)
            out.append(f"{offset:04x}: " + "".join(f"{b:02x} " for b in row).ljust(48) + text)
    return "\n".join(out).encode() + b"\n"


@pytest.mark.parametrize("timed", [False, True])
def test_curl_trace_output_gives_back_the_exact_request(timed: bool) -> None:
    sent = http("POST", "/extensions/github/webhook/", GITHUB_HEADERS, GITHUB_PUSH)
    req = parse_http_request(curl_trace(sent, timed=timed))
    assert req.body == GITHUB_PUSH
    assert req.path == "/extensions/github/webhook/"


def test_curl_trace_ascii_output_is_refused_with_a_hint() -> None:
    trace = b"=> Send header, 40 bytes (0x28)\n0000: POST /extensions/github/webhook/ HTTP/1.1\n"
    with pytest.raises(HttpRequestError, match="curl --trace FILE"):
        parse_http_request(trace)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"", "the input is empty"),
        (b"  \n", "the input is empty"),
        (b"POST /extensions/github/webhook/\r\nHost: a\r\n\r\n", "the first line must be 'METHOD /path HTTP/1.1'"),
        (b"hello world", "the first line must be"),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nshort",
            "ends after 5 bytes, but Content-Length says 10",
        ),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nabcdef", "4 bytes follow the end of the body"),
        (b"POST / HTTP/1.1\r\nHost: a\r\n\r\n{}", "add 'Content-Length: 2'"),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n", "before its last chunk"),
        (b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", "needs a Host header (any value"),
        (b"POST / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n", "illegal header line"),
    ],
)
def test_malformed_input_is_a_clear_error(raw: bytes, problem: str) -> None:
    with pytest.raises(HttpRequestError) as caught:
        parse_http_request(raw)
    assert problem in str(caught.value)
    assert caught.value.code == "bad_http_request"


# --- explaining --------------------------------------------------------------------------------


async def test_a_github_push_is_stored_for_the_installations_region() -> None:
    req = parse_http_request(http("POST", "/extensions/github/webhook/", GITHUB_HEADERS, GITHUB_PUSH))
    result = await explain(parts(), req)
    assert (result.kind, result.reason, result.status) == ("store", "stored", 202)
    assert result.regions == ("us",)
    assert result.mailbox == "github:10:69:push"  # repository 1296269 % 100 buckets, event type last
    assert [step.stage for step in result.steps] == [
        "request",
        "classification",
        "provider",
        "view",
        "body",
        "lookup",
        "decision",
        "mailbox",
    ]
    (lookup,) = stage_texts(result, "lookup")
    assert "github integration with external id '4711'" in lookup
    assert "integration 10" in lookup
    assert "organization acme (id 1) in region us" in lookup
    assert stage_texts(result, "view") == ["webhook (^/extensions/github/webhook/$): reads the body"]


async def test_explaining_through_a_router_stores_nothing() -> None:
    outbox = InMemoryOutbox()
    directory = InMemoryDirectory.from_data(DIRECTORY)
    router = Router(directory, outbox, context)
    req = parse_http_request(http("POST", "/extensions/github/webhook/", GITHUB_HEADERS, GITHUB_PUSH))
    result = await explain(router, req)
    assert result.kind == "store"
    assert outbox.rows == []
    assert directory.calls == 1  # the lookup really ran (against the router's own directory)


async def test_a_signed_slack_event_goes_to_the_workspaces_first_region() -> None:
    result = await explain(parts(), parse_http_request(slack_event()))
    assert (result.kind, result.reason, result.regions, result.status) == ("forward", "first_region", ("de",), None)
    (lookup,) = stage_texts(result, "lookup")
    assert "slack integration with external id 'T0GLOBEX' (active only)" in lookup
    assert "organization globex (id 2) in region de" in lookup
    assert stage_texts(result, "decision") == ["route unchanged to region de (first_region)"]


async def test_a_forged_slack_event_is_refused_before_any_lookup() -> None:
    directory = InMemoryDirectory.from_data(DIRECTORY)
    result = await explain(parts(directory), parse_http_request(slack_event(secret="not-the-secret")))
    assert (result.kind, result.status, result.reason) == ("reply", 401, "bad_signature")
    assert stage_texts(result, "lookup") == []
    assert directory.calls == 0


async def test_a_stale_slack_signature_says_so() -> None:
    result = await explain(parts(), parse_http_request(slack_event(now=NOW - 3600)))
    assert (result.status, result.reason) == (401, "stale_signature")


async def test_an_unknown_integration_shows_the_key_that_found_nothing() -> None:
    body = json.dumps({"installation": {"id": 999}, "repository": {"id": 1}}).encode()
    result = await explain(
        parts(), parse_http_request(http("POST", "/extensions/github/webhook/", GITHUB_HEADERS, body))
    )
    assert (result.kind, result.status, result.reason) == ("reply", 400, "unknown_integration")
    assert stage_texts(result, "lookup") == ["github integration with external id '999': nothing found"]


async def test_a_directory_outage_is_the_sidecars_503() -> None:
    directory = InMemoryDirectory.from_data(DIRECTORY)
    directory.fail = True
    req = parse_http_request(http("POST", "/extensions/github/webhook/", GITHUB_HEADERS, GITHUB_PUSH))
    result = await explain(parts(directory), req)
    assert (result.kind, result.status, result.reason) == ("reply", 503, "directory_unavailable")
    assert "failed (directory_unavailable" in stage_texts(result, "lookup")[0]
    assert stage_texts(result, "decision") == [
        "answer 503 (directory_unavailable); retry-after: 5; nothing reaches an upstream"
    ]


async def test_a_view_that_decides_on_headers_never_reads_the_body() -> None:
    raw = http("POST", "/extensions/github/installation/4711/", {"Content-Type": "text/plain"}, b"ignored")
    result = await explain(parts(), parse_http_request(raw))
    assert (result.kind, result.reason) == ("control", "control_only_view")
    assert stage_texts(result, "view") == [
        "installation (^/extensions/github/installation/(?P<installation_id>[^/]+)/$): control-only"
    ]
    assert stage_texts(result, "body") == ["decided on the headers: the body is not read"]


async def test_paths_that_are_not_webhooks_go_to_control() -> None:
    result = await explain(parts(), parse_http_request(b"GET /api/0/organizations/ HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert (result.kind, result.reason, result.regions) == ("control", "not_a_webhook_path", ())
    unknown = await explain(parts(), parse_http_request(b"POST /extensions/nope/x/ HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert unknown.reason == "unknown_provider"
    assert "'nope', which silo-router does not know" in stage_texts(unknown, "classification")[0]


def jira_webhook(key: rsa.RSAPrivateKey) -> bytes:
    qsh = hashlib.sha256(b"POST&/extensions/jira/issue-updated&").hexdigest()
    claims = {"iss": JIRA_CLIENT_KEY, "aud": AUDIENCE, "iat": int(NOW) - 10, "exp": int(NOW) + 170, "qsh": qsh}
    token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": KID})
    body = json.dumps({"webhookEvent": "jira:issue_updated", "issue": {"id": "10002"}}).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"JWT {token}"}
    return http("POST", "/extensions/jira/issue-updated/", headers, body)


async def test_key_fetches_are_traced_before_the_lookup() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    keys = InMemoryKeySource({("atlassian_connect", KID): pem.decode()})
    result = await explain(parts(keys=keys), parse_http_request(jira_webhook(key)))
    assert (result.kind, result.regions) == ("store", ("us",))
    stages = [step.stage for step in result.steps]
    assert stages.index("key_fetch") < stages.index("lookup")
    (fetch,) = stage_texts(result, "key_fetch")
    assert fetch.startswith(f"public key '{KID}' from atlassian_connect: found (")
    # Without a key source (offline), the key is missing and the token refused, as the sidecar would.
    offline = await explain(parts(keys_note="offline"), parse_http_request(jira_webhook(key)))
    assert (offline.status, offline.reason) == (404, "invalid_jwt")
    assert stage_texts(offline, "key_fetch") == [
        f"public key '{KID}' from atlassian_connect: not asked (offline), so no such key"
    ]


async def test_header_values_never_appear_in_the_explanation() -> None:
    raw = slack_event()
    result = await explain(parts(), parse_http_request(raw))
    signature = parse_http_request(raw).header("x-slack-signature")
    assert signature is not None
    for output in (format_explanation(result), format_explanation(result, "json")):
        assert signature not in output
        assert "x-slack-signature" in output  # the name is shown: it tells which headers arrived


async def test_text_and_json_output() -> None:
    result = await explain(
        parts(), parse_http_request(http("POST", "/extensions/github/webhook/", GITHUB_HEADERS, GITHUB_PUSH))
    )
    text = format_explanation(result)
    assert text.startswith("decision  store for us, answer 202\nreason    stored\nmailbox   github:10:69:push\n")
    assert "  lookup          github integration with external id '4711'" in text
    data = json.loads(format_explanation(result, "json"))
    assert data["kind"] == "store" and data["regions"] == ["us"] and data["status"] == 202
    assert data["steps"][0] == {"stage": "request", "text": result.steps[0].text}


# --- the CLI (issue 6: `silo-router explain` answers for a GitHub and a Slack request) -----------


@pytest.fixture
def offline_files(tmp_path: Path) -> tuple[Path, Path]:
    settings = {
        "data_dir": str(tmp_path / "data"),
        "regions": {"us": {"address": "127.0.0.1:9001"}, "de": {"address": "127.0.0.1:9002"}},
        "secrets": {"slack_signing_secret": SLACK_SECRET},
    }
    config = tmp_path / "silo-router.yaml"
    config.write_text(yaml.safe_dump(settings))
    directory = tmp_path / "directory.yaml"
    directory.write_text(yaml.safe_dump(DIRECTORY))
    return config, directory


def test_cli_explains_a_github_push_offline(
    offline_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, directory = offline_files
    request = tmp_path / "github.http"
    request.write_bytes(http("POST", "/extensions/github/webhook/", GITHUB_HEADERS, GITHUB_PUSH))
    assert main(["explain", str(request), "--config", str(config), "--offline", str(directory)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("decision  store for us, answer 202\n")
    assert "organization acme (id 1) in region us" in out


def test_cli_explains_a_signed_slack_event_from_stdin_as_json(
    offline_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config, directory = offline_files
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(slack_event(now=time.time()))))
    assert main(["explain", "-", "--format", "json", "--config", str(config), "--offline", str(directory)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["kind"], data["regions"], data["reason"]) == ("forward", ["de"], "first_region")


def test_cli_reports_a_malformed_request(
    offline_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, directory = offline_files
    request = tmp_path / "bad.http"
    request.write_bytes(b"POST /extensions/github/webhook/ HTTP/1.1\r\nHost: a\r\nContent-Length: 99\r\n\r\n{}")
    assert main(["explain", str(request), "--config", str(config), "--offline", str(directory)]) == 2
    assert "the body ends after 2 bytes, but Content-Length says 99" in capsys.readouterr().err
    assert main(["explain", str(tmp_path / "missing.http"), "--config", str(config)]) == 2
    assert "cannot read" in capsys.readouterr().err


async def run_cli(*args: str) -> tuple[int, str, str]:
    """``python -m sidecar …`` as an operator runs it: its own event loop and pool."""
    done = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sidecar", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await done.communicate()
    assert done.returncode is not None
    return done.returncode, out.decode(), err.decode()


@pytest.mark.db
async def test_cli_asks_the_database_by_default(
    db_url: str, offline_files: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, _ = offline_files
    await load_directory(db_url, parse_directory(DIRECTORY))
    request = tmp_path / "slack.http"
    request.write_bytes(slack_event(now=time.time()))
    monkeypatch.setenv("DATABASE_URL", db_url)
    status, out, err = await run_cli("explain", str(request), "--config", str(config))
    assert status == 0, err
    assert out.startswith("decision  forward to de\n"), out
    assert "slack integration with external id 'T0GLOBEX' (active only): integration 21" in out


@pytest.mark.db
async def test_cli_in_xds_mode_knows_the_region_tables_regions(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The settings file names no region: in xds mode the sidecar routes the region table's.
    config = tmp_path / "silo-router.yaml"
    settings = {
        "data_dir": str(tmp_path / "data"),
        "envoy": {"mode": "xds"},
        "secrets": {"slack_signing_secret": SLACK_SECRET},
    }
    config.write_text(yaml.safe_dump(settings))
    regions = [{"name": "de", "address": "127.0.0.1:9002"}, {"name": "us", "address": "127.0.0.1:9001"}]
    await load_directory(db_url, parse_directory({**DIRECTORY, "regions": regions}))
    request = tmp_path / "slack.http"
    request.write_bytes(slack_event(now=time.time()))
    monkeypatch.setenv("DATABASE_URL", db_url)
    status, out, err = await run_cli("explain", str(request), "--config", str(config))
    assert status == 0, err
    assert out.startswith("decision  forward to de\n"), out
