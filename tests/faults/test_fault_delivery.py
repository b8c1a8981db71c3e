"""Delivery under faults, with the real worker (``silo-router deliver``) sending through Envoy's
egress listener to real region servers:

* a region down for a long time: its rows wait (the other region is served meanwhile) and, once it
  is back, arrive complete and in mailbox order;
* the worker SIGKILLed in the middle of a batch: a new worker takes the rows over once the claim's
  lease lapses; nothing is lost and no row overtakes an earlier one of its mailbox (the row in
  flight at the kill may arrive twice: delivery is at least once).
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from faultkit import FAULT_ID, PHASE_S, Answer, Figures, RestartablePostgres, github_shot, seconds, send
from harness import Edge, running_edge

from sidecar.demo import Received, UpstreamServer

pytestmark = [pytest.mark.faults, pytest.mark.db, pytest.mark.envoy, pytest.mark.slow]

LEASE_S = 9.0
DELIVERY = {
    "poll_interval_s": 0.05,
    "timeout_s": 2,
    "lease_s": LEASE_S,  # must exceed a send's deadline (2 × timeout + 2) + 2
    "backoff_base_s": 0.5,
    "backoff_rate": 1.5,
    "backoff_max_s": 2.0,
    "max_attempts": 1000,  # a long outage must not turn rows into dead letters
}


class Worker:
    """``silo-router deliver`` as a child process (its own metrics port), killable like in production."""

    def __init__(self, edge: Edge, database_url: str, log_path: Path) -> None:
        raw = yaml.safe_load(edge.config_path.read_text())
        raw["sidecar"] = {**raw.get("sidecar", {}), "metrics": "127.0.0.1:0"}
        self.config_path = edge.config_path.with_name("deliver.yaml")
        self.config_path.write_text(yaml.safe_dump(raw))
        self.database_url = database_url
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        env = {**os.environ, "DATABASE_URL": self.database_url}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sidecar", "deliver", "--config", str(self.config_path)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@contextmanager
def worker(edge: Edge, database_url: str, tmp: Path) -> Iterator[Worker]:
    running = Worker(edge, database_url, tmp / "deliver.log").start()
    try:
        yield running
    finally:
        running.stop()


def store(edge: Edge, count: int, installation: int = 4712) -> list[Answer]:
    """``count`` GitHub pushes of one repository (one mailbox), one after the other: their row ids,
    and so the order a region must see them in, follow the order of the 202s."""
    answers = []
    with httpx.Client(timeout=10) as client:
        for _ in range(count):
            answer = send(client, edge.url, github_shot(installation))
            assert answer.status == 202, answer
            answers.append(answer)
    return answers


def queue_order(database_url: str, region: str) -> list[str]:
    """The nonces of ``region``'s rows in id order: the order the region must receive them in."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT request_headers->>%s FROM webhook_payload WHERE region_name = %s ORDER BY id", (FAULT_ID, region)
        ).fetchall()
    return [row[0] for row in rows]


def pending(database_url: str) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT region_name, count(*) FROM webhook_payload WHERE state <> 'delivered' GROUP BY 1"
        ).fetchall()
    return {region: count for region, count in rows}


def received_order(server: UpstreamServer) -> list[str]:
    return [r.headers[FAULT_ID] for r in list(server.received) if FAULT_ID in r.headers]


def first_arrivals(order: list[str]) -> list[str]:
    seen: set[str] = set()
    firsts = []
    for nonce in order:
        if nonce not in seen:
            seen.add(nonce)
            firsts.append(nonce)
    return firsts


def wait_until(predicate: Any, timeout_s: float, poll_s: float = 0.1) -> float | None:
    """Seconds until ``predicate()`` held, or None."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if predicate():
            return time.monotonic() - started
        time.sleep(poll_s)
    return None


def misdelivered(upstreams: Mapping[str, UpstreamServer], shots: Mapping[str, tuple[str, ...]]) -> list[str]:
    """Deliveries to a region that is not one of the webhook's, or to control."""
    wrong = []
    for name, server in upstreams.items():
        for nonce in received_order(server):
            if nonce in shots and name not in shots[nonce]:
                wrong.append(f"{nonce} delivered to {name}, expected {shots[nonce]}")
    return wrong


def test_a_region_down_for_long_gets_its_rows_in_order_after_it_returns(
    tmp_path: Path, restartable_pg: RestartablePostgres
) -> None:
    figures = Figures("region-down")
    url = restartable_pg.url
    with running_edge(tmp_path, url, delivery=DELIVERY) as edge, worker(edge, url, tmp_path):
        de = edge.upstreams["de"]
        de.RequestHandlerClass = DownableRegion  # before any connection: a kept-alive one keeps its handler
        before = store(edge, 5)
        assert wait_until(lambda: pending(url) == {}, 30) is not None, "the worker never delivered"

        de.down = True  # type: ignore[attr-defined]  # every connection reset: Envoy's egress answers 503
        figures.faults_injected += 1
        down_since = time.monotonic()
        during = store(edge, 40)
        # The other region of the same webhooks is not held up by the dead one.
        us_served = wait_until(lambda: pending(url).get("us", 0) == 0, 30)
        outage_s = max(3 * PHASE_S, 6.0)  # several backoff cycles (backoff_max_s = 2 s)
        time.sleep(max(0.0, outage_s - (time.monotonic() - down_since)))
        waiting = pending(url).get("de", 0)
        with psycopg.connect(url) as conn:
            attempts = conn.execute(
                "SELECT max(attempts) FROM webhook_payload WHERE region_name = 'de' AND state = 'pending'"
            ).fetchone()
        refused = de.refused  # type: ignore[attr-defined]

        de.down = False  # type: ignore[attr-defined]
        back = time.monotonic()
        drained = wait_until(lambda: pending(url) == {}, 60)
        figures.faults_survived += int(drained is not None)
        shots = {a.shot.nonce: a.shot.regions for a in [*before, *during]}
        wrong = misdelivered(edge.upstreams, shots)
        order_de = queue_order(url, "de")
        received_de, received_us = received_order(de), received_order(edge.upstreams["us"])
        arrived_de, arrived_us = first_arrivals(received_de), first_arrivals(received_us)

    during_nonces = [a.shot.nonce for a in during]
    lost = [n for n in during_nonces if n not in arrived_de] + [
        a.shot.nonce for a in [*before, *during] if a.shot.nonce not in arrived_us
    ]
    figures.requests = len(before) + len(during)
    figures.answers = {"stored": {"202": len(before) + len(during)}}
    figures.misrouted = len(wrong)
    figures.lost = len(lost)
    figures.duplicates = len(received_de) - len(arrived_de) + len(received_us) - len(arrived_us)
    figures.timings_s = {
        "region_down": seconds(back - down_since),
        "drain_after_return": seconds(drained or -1),
        "other_region_served_within": seconds(us_served or -1),
    }
    figures.notes.append(
        f"{waiting} rows waited for de ({refused} connections reset), max {attempts[0] if attempts else 0} attempts"
    )
    figures.write()

    assert us_served is not None, "the healthy region waited for the dead one"
    assert waiting == len(during), "rows for the dead region must wait, not be dropped"
    assert drained is not None, f"still pending after 60 s: {pending(url)}"
    assert wrong == [] and lost == []
    assert refused > 0, "the region was never asked while down"
    assert arrived_de == order_de, "mailbox order not kept"


class DownableRegion(BaseHTTPRequestHandler):
    """A region that, while its server's ``down`` is set, resets every request's connection without
    an answer (a crashed host behind a live address); otherwise it answers 200 and records."""

    server: UpstreamServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        if getattr(self.server, "down", False):
            self.server.refused = getattr(self.server, "refused", 0) + 1  # type: ignore[attr-defined]
            self.close_connection = True
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()  # RST, no answer
            return
        self.server.record(Received(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


class SlowRegion(BaseHTTPRequestHandler):
    """A region that takes ``DELAY_S`` per webhook, so a batch is still in flight when the worker dies."""

    DELAY_S = 0.15
    server: UpstreamServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        time.sleep(self.DELAY_S)
        self.server.record(Received(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_worker_killed_mid_batch_loses_nothing_and_keeps_mailbox_order(
    tmp_path: Path, restartable_pg: RestartablePostgres
) -> None:
    figures = Figures("worker-sigkill")
    url = restartable_pg.url
    with running_edge(tmp_path, url, delivery=DELIVERY) as edge:
        us = edge.upstreams["us"]
        us.RequestHandlerClass = SlowRegion
        stored = store(edge, 40, installation=4711)  # one mailbox, region us only
        first = Worker(edge, url, tmp_path / "deliver-1.log").start()
        # Mid-batch: some rows delivered, most still claimed by this worker.
        started = wait_until(lambda: len(us.received) >= 5, 30, poll_s=0.02)
        assert started is not None, "the first worker never delivered"
        first.kill()
        killed = time.monotonic()
        figures.faults_injected += 1
        delivered_at_kill = len(first_arrivals(received_order(us)))
        with worker(edge, url, tmp_path) as second:
            drained = wait_until(lambda: pending(url) == {}, LEASE_S + 60)
            assert second.process is not None
        figures.faults_survived += int(drained is not None)
        recovered_s = time.monotonic() - killed if drained is not None else -1.0
        order = queue_order(url, "us")
        arrivals = received_order(us)
        wrong = misdelivered(edge.upstreams, {a.shot.nonce: a.shot.regions for a in stored})

    firsts = first_arrivals(arrivals)
    lost = [a.shot.nonce for a in stored if a.shot.nonce not in firsts]
    figures.requests = len(stored)
    figures.answers = {"stored": {"202": len(stored)}}
    figures.misrouted = len(wrong)
    figures.lost = len(lost)
    figures.duplicates = len(arrivals) - len(firsts)
    figures.timings_s = {"all_delivered_after_kill": seconds(recovered_s), "lease": LEASE_S}
    figures.notes.append(f"killed after {delivered_at_kill} of {len(stored)} rows; region takes 0.15 s per row")
    figures.write()

    assert drained is not None, f"still pending: {pending(url)}"
    assert 0 < delivered_at_kill < len(stored), "the kill was not mid-batch"
    assert wrong == [] and lost == []
    assert firsts == order, "a row overtook an earlier one of its mailbox"
