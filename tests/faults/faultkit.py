"""The fault suite's tools: a PostgreSQL that can be stopped and started again, a small load
generator that records every answer, the checks every scenario ends with, and the figures file.

Every load request carries ``x-fault-id: <nonce>`` (and the nonce in its body), so each request an
upstream received, and each row in ``webhook_payload``, can be traced back to the request that
caused it and checked against the region the directory says owns it.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

FAULT_ID = "x-fault-id"
SLACK_SECRET = "test-slack-secret"
FIGURES_DIR = Path(os.environ.get("SILO_FIGURES_DIR", Path(__file__).resolve().parents[2] / "build" / "reliability"))
WRITTEN: list[dict[str, Any]] = []
"""Figures written by this process, as written (the terminal summary lists them: other sessions
sharing the checkout may overwrite the files meanwhile)."""

PHASE_S = float(os.environ.get("SILO_FAULT_PHASE_S", "2.0"))
"""How long each phase of a scenario (before, during, after the fault) runs under load: the
default in ``make test``, longer in ``make faults``."""
ROUNDS = int(os.environ.get("SILO_FAULT_ROUNDS", "1"))
"""How many times a scenario injects its fault."""

UNCACHED_TEAMS = 200
"""Slack workspaces that exist in the directory but that no warm-up ever looked up."""

FAULT_DIRECTORY: dict[str, Any] = {
    "organizations": [
        {"id": 1, "slug": "acme", "region": "us"},
        {"id": 2, "slug": "globex", "region": "de"},
        {"id": 3, "slug": "initech", "region": "us"},
    ],
    "integrations": [
        {"id": 10, "provider": "github", "external_id": "4711", "status": "active", "organizations": [1]},
        {"id": 11, "provider": "github", "external_id": "4712", "status": "active", "organizations": [2, 3]},
        {"id": 20, "provider": "slack", "external_id": "T0ACME", "status": "active", "organizations": [1]},
        {"id": 21, "provider": "slack", "external_id": "T0GLOBEX", "status": "active", "organizations": [2]},
        *(
            {"id": 1000 + n, "provider": "slack", "external_id": f"T0U{n:03d}", "status": "active",
             "organizations": [1 + n % 2]}
            for n in range(UNCACHED_TEAMS)
        ),
    ],
}  # fmt: skip

ROUTED_TEAMS = {"T0ACME": "us", "T0GLOBEX": "de"}
STORED_INSTALLATIONS = {4711: ("us",), 4712: ("de", "us")}


def uncached_team(n: int) -> tuple[str, str]:
    return f"T0U{n:03d}", "us" if n % 2 == 0 else "de"


# --- requests ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shot:
    """One request of the load, with what the directory says must happen to it."""

    nonce: str
    kind: str
    """routed (Slack, synchronous to one region) | uncached (routed, first lookup of its key) |
    stored (GitHub push, 202 after its rows) | control (bypasses the sidecar) |
    control_via_sidecar (the sidecar decides "control")."""
    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    region: str | None = None
    """routed, uncached: the only region allowed to receive it."""
    regions: tuple[str, ...] = ()
    """stored: one row per region, exactly these."""


def slack_signed(body: bytes, secret: str = SLACK_SECRET, at: float | None = None) -> dict[str, str]:
    timestamp = str(int(time.time() if at is None else at))
    digest = hmac.new(secret.encode(), b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    return {
        "content-type": "application/json",
        "x-slack-request-timestamp": timestamp,
        "x-slack-signature": "v0=" + digest,
    }


def nonce() -> str:
    return uuid.uuid4().hex


def slack_shot(team: str, region: str, kind: str = "routed") -> Shot:
    n = nonce()
    body = json.dumps(
        {"type": "event_callback", "team_id": team, "event_id": n, "event": {"type": "app_mention"}}
    ).encode()
    return Shot(n, kind, "POST", "/extensions/slack/event/", {**slack_signed(body), FAULT_ID: n}, body, region=region)


def github_shot(installation: int, event: str = "push") -> Shot:
    n = nonce()
    body = json.dumps({"installation": {"id": installation}, "repository": {"id": 42}, "after": n}).encode()
    headers = {"content-type": "application/json", "x-github-event": event, FAULT_ID: n}
    return Shot(
        n, "stored", "POST", "/extensions/github/webhook/", headers, body, regions=STORED_INSTALLATIONS[installation]
    )


def control_shot() -> Shot:
    n = nonce()
    return Shot(n, "control", "GET", f"/api/0/organizations/?n={n}", {FAULT_ID: n}, b"")


def control_via_sidecar_shot() -> Shot:
    """A GitHub ``installation`` event: the sidecar reads the (buffered) body and passes it to
    control. (Control-only views are no use here: Envoy routes those without the sidecar.)"""
    n = nonce()
    body = json.dumps({"action": "created", "installation": {"id": 4711}, "nonce": n}).encode()
    headers = {"content-type": "application/json", "x-github-event": "installation", FAULT_ID: n}
    return Shot(n, "control_via_sidecar", "POST", "/extensions/github/webhook/", headers, body)


def standard_mix(uncached: bool = False) -> Callable[[], Shot]:
    """routed, stored, control, in a fixed rotation (and a never-seen workspace when ``uncached``)."""
    teams = itertools.cycle(ROUTED_TEAMS.items())
    installations = itertools.cycle(STORED_INSTALLATIONS)
    fresh = itertools.count()
    lock = threading.Lock()
    makers: list[Callable[[], Shot]] = [
        lambda: slack_shot(*next(teams)),
        lambda: github_shot(next(installations)),
        lambda: slack_shot(*next(teams)),
        control_shot,
        lambda: github_shot(next(installations)),
        control_via_sidecar_shot,
    ]
    if uncached:
        makers.append(lambda: slack_shot(*uncached_team(next(fresh) % UNCACHED_TEAMS), kind="uncached"))
    order = itertools.cycle(makers)

    def make() -> Shot:
        with lock:
            maker = next(order)
            return maker()

    return make


# --- answers ---------------------------------------------------------------------------------------


@dataclass
class Answer:
    shot: Shot
    sent_at: float
    """time.monotonic() when the request left."""
    done_at: float
    status: int | None
    upstream: str | None
    retry_after: str | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        kind = self.shot.kind
        if kind in ("routed", "uncached"):
            return self.status == 200 and self.upstream == self.shot.region
        if kind == "stored":
            return self.status == 202
        return self.status == 200 and self.upstream == "control"

    @property
    def elapsed(self) -> float:
        return self.done_at - self.sent_at


def send(client: httpx.Client, base_url: str, shot: Shot) -> Answer:
    sent = time.monotonic()
    try:
        response = client.request(shot.method, base_url + shot.path, content=shot.body, headers=dict(shot.headers))
    except httpx.HTTPError as exc:
        return Answer(shot, sent, time.monotonic(), None, None, None, f"{exc.__class__.__name__}: {exc}")
    upstream = None
    if response.headers.get("content-type") == "application/json":
        try:
            upstream = response.json().get("upstream")
        except ValueError:
            upstream = None
    return Answer(shot, sent, time.monotonic(), response.status_code, upstream, response.headers.get("retry-after"))


class Load:
    """``threads`` closed-loop clients, each pausing ``pause_s`` between requests: a bounded load."""

    def __init__(self, base_url: str, make: Callable[[], Shot], threads: int = 2, pause_s: float = 0.02) -> None:
        self.base_url = base_url
        self.make = make
        self.threads = threads
        self.pause_s = pause_s
        self.answers: list[Answer] = []
        self.crashes: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    def __enter__(self) -> Load:
        for i in range(self.threads):
            worker = threading.Thread(target=self._run, name=f"load-{i}", daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(30)

    def _run(self) -> None:
        try:
            with httpx.Client(timeout=httpx.Timeout(20.0)) as client:
                while not self._stop.is_set():
                    answer = send(client, self.base_url, self.make())
                    with self._lock:
                        self.answers.append(answer)
                    self._stop.wait(self.pause_s)
        except Exception as exc:  # a crash of the generator must fail the test, not vanish in a thread
            self.crashes.append(repr(exc))

    def snapshot(self) -> list[Answer]:
        with self._lock:
            return list(self.answers)

    def wait_for(self, predicate: Callable[[Answer], bool], after: float, timeout_s: float) -> Answer | None:
        """The first answer sent at or after ``after`` that satisfies ``predicate`` (polling)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = [a for a in self.snapshot() if a.sent_at >= after and predicate(a)]
            if found:
                return min(found, key=lambda a: a.done_at)
            time.sleep(0.02)
        return None


# --- checks ----------------------------------------------------------------------------------------


def allowed_receivers(shot: Shot, fail_open: bool) -> set[str]:
    """Who may receive a request of this shot. A region other than its own: never."""
    if shot.kind in ("routed", "uncached"):
        return {shot.region or "?"} | ({"control"} if fail_open else set())
    if shot.kind == "stored":
        return {"control"} if fail_open else set()  # answered by the sidecar; no upstream sees it
    return {"control"}


def misroutes(answers: Sequence[Answer], upstreams: Mapping[str, Any], fail_open: bool = False) -> list[str]:
    """Every upstream receipt and every answer naming an upstream that the directory did not allow."""
    shots = {a.shot.nonce: a.shot for a in answers}
    problems = []
    for name, server in upstreams.items():
        for received in list(server.received):
            fault_id = received.headers.get(FAULT_ID)
            if fault_id is None:
                continue
            shot = shots.get(fault_id)
            if shot is None:
                continue  # a retry sent outside the load (checked by its own test)
            if name not in allowed_receivers(shot, fail_open):
                problems.append(
                    f"{shot.kind} {shot.nonce} reached {name}, allowed {allowed_receivers(shot, fail_open)}"
                )
    for answer in answers:
        if answer.upstream is not None and answer.upstream not in allowed_receivers(answer.shot, fail_open):
            problems.append(f"{answer.shot.kind} {answer.shot.nonce} answered by {answer.upstream}")
    return problems


def stored_rows(database_url: str) -> dict[str, list[str]]:
    """nonce → the regions of its rows (GitHub pushes carry the nonce in ``after``)."""
    found: dict[str, list[str]] = {}
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT region_name, request_body FROM webhook_payload ORDER BY id").fetchall()
    for region, body in rows:
        try:
            key = json.loads(bytes(body)).get("after")
        except ValueError:
            continue
        if isinstance(key, str):
            found.setdefault(key, []).append(region)
    return found


def lost_payloads(answers: Iterable[Answer], rows: Mapping[str, list[str]]) -> list[str]:
    """202s whose rows are not all there: the one thing that must never happen."""
    lost = []
    for answer in answers:
        if answer.shot.kind == "stored" and answer.status == 202:
            have = sorted(set(rows.get(answer.shot.nonce, [])))
            if have != sorted(answer.shot.regions):
                lost.append(f"{answer.shot.nonce}: 202 but rows for {have}, expected {list(answer.shot.regions)}")
    return lost


def duplicates(rows: Mapping[str, list[str]]) -> int:
    """Rows beyond one per (webhook, region): a 503 whose row had committed, then retried."""
    return sum(len(regions) - len(set(regions)) for regions in rows.values())


def summarize(answers: Sequence[Answer]) -> dict[str, dict[str, int]]:
    """kind → {status: count} ("error" for no answer at all)."""
    out: dict[str, dict[str, int]] = {}
    for answer in answers:
        key = str(answer.status) if answer.status is not None else "error"
        bucket = out.setdefault(answer.shot.kind, {})
        bucket[key] = bucket.get(key, 0) + 1
    return out


def unanswered(answers: Iterable[Answer]) -> list[str]:
    return [f"{a.shot.kind} {a.shot.nonce}: {a.error}" for a in answers if a.status is None]


# --- PostgreSQL that can be restarted --------------------------------------------------------------


class RestartablePostgres:
    """pgserver's PostgreSQL, stopped and started with ``pg_ctl`` on the same socket, so the URL
    every process holds stays valid across a restart.

    The data directory is NOT under pytest's ``tmp_path``: as root, pgserver runs PostgreSQL as the
    ``pgserver`` user, and every pytest session that starts on this machine chmods
    ``/tmp/pytest-of-root`` back to 0700, locking a running server out of its own files.
    """

    def __init__(self) -> None:
        from sidecar import db

        self._home = Path(tempfile.mkdtemp(prefix="silo-faults-pg-"))
        self._home.chmod(0o755)
        pgdata = self._home / "pg"
        self.pgdata = pgdata
        self._server = db.embedded_server(pgdata)  # imports pgserver with its import-time warning silenced
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pgserver import _commands
        self.url = self._server.get_uri()
        info = self._server.get_postmaster_info()  # type: ignore[attr-defined]
        self.socket_dir = info.socket_dir
        self._pg_ctl = _commands.pg_ctl
        self._user = "pgserver" if os.geteuid() == 0 else None
        self.running = True

    def _ctl(self, args: list[str]) -> None:
        self._pg_ctl(args, pgdata=self.pgdata, user=self._user, timeout=60)

    def stop(self, mode: str = "immediate") -> None:
        """``immediate`` is a crash as far as clients can tell: connections die mid-statement."""
        self._ctl(["-w", "-m", mode, "stop"])
        self.running = False

    def start(self) -> None:
        self._ctl(["-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.pgdata / "log"), "start"])
        self.running = True

    def cleanup(self) -> None:
        # pgserver stops the server it started; after a restart its pid is stale, so stop ours too.
        self._server.cleanup()
        if (self.pgdata / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.CalledProcessError):
                self._ctl(["-w", "-m", "fast", "stop"])
        self.running = False
        shutil.rmtree(self._home, ignore_errors=True)


def wait_for_database(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with psycopg.connect(url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.Error:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# --- figures ---------------------------------------------------------------------------------------


@dataclass
class Figures:
    """What one scenario measured; written to ``build/reliability/<scenario>.json``."""

    scenario: str
    faults_injected: int = 0
    faults_survived: int = 0
    requests: int = 0
    answers: dict[str, dict[str, int]] = field(default_factory=dict)
    misrouted: int = 0
    lost: int = 0
    unanswered: int = 0
    duplicates: int = 0
    timings_s: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def write(self) -> Path:
        """``build/reliability/fault-<scenario>-p<phase>-r<rounds>.json``: ``make test`` and
        ``make faults`` runs keep separate files."""
        FIGURES_DIR.mkdir(parents=True, exist_ok=True)
        path = FIGURES_DIR / f"fault-{self.scenario}-p{PHASE_S:g}-r{ROUNDS}.json"
        data = asdict(self)
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        WRITTEN.append(data)
        return path


def seconds(value: float) -> float:
    return round(value, 3)


@dataclass
class Timeline:
    """Named instants (time.monotonic()) of a scenario."""

    marks: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str) -> float:
        self.marks[name] = time.monotonic()
        return self.marks[name]

    def __getitem__(self, name: str) -> float:
        return self.marks[name]


def between(answers: Iterable[Answer], start: float, end: float) -> Iterator[Answer]:
    """Answers to requests sent in [start, end)."""
    return (a for a in answers if start <= a.sent_at < end)


def warm(base_url: str, timeout_s: float = 20) -> None:
    """Until a routed and a stored request both succeed (the sidecar and its pool are up)."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=5) as client:
        while True:
            answers = [send(client, base_url, slack_shot("T0ACME", "us")), send(client, base_url, github_shot(4711))]
            if all(a.ok for a in answers):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"edge never got ready: {answers}")
            time.sleep(0.1)
