"""The sidecar killed (SIGKILL) and restarted, and stopped (SIGTERM), under load.

Invariants checked on every answer and every upstream receipt:

* no request reaches a region the directory did not name (misrouted = 0);
* every request is answered: the right upstream, or the configured failure mode while the sidecar
  is down (fail-closed: Envoy's ``status_on_error`` 503; fail-open: control);
* every 202 has its rows (lost = 0).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from faultkit import (
    PHASE_S,
    ROUNDS,
    Answer,
    Figures,
    Load,
    RestartablePostgres,
    Shot,
    Timeline,
    between,
    duplicates,
    github_shot,
    lost_payloads,
    misroutes,
    seconds,
    send,
    slack_shot,
    standard_mix,
    stored_rows,
    summarize,
    unanswered,
    warm,
)
from harness import running_edge

from sidecar.app import GRACE_S

pytestmark = [pytest.mark.faults, pytest.mark.db, pytest.mark.envoy, pytest.mark.slow]

THROUGH_SIDECAR = ("routed", "uncached", "stored", "control_via_sidecar")
DECIDED_BY_SIDECAR = ("routed", "uncached", "stored")
"""Kinds whose success proves the sidecar answered (fail-open sends the others to control anyway)."""


def failure_mode_answer(fail_open: bool) -> Callable[[Answer], bool]:
    """The answer a request gets while the sidecar is down, per the configured failure mode."""

    def ok(answer: Answer) -> bool:
        if answer.ok:
            return True
        if answer.shot.kind == "control":  # bypasses the sidecar: never affected
            return False
        if fail_open:
            return answer.status == 200 and answer.upstream == "control"
        return answer.status == 503

    return ok


@pytest.mark.parametrize("fail_open", [False, True], ids=["fail-closed", "fail-open"])
def test_sidecar_sigkill_and_restart_under_load(
    tmp_path: Path, restartable_pg: RestartablePostgres, fail_open: bool
) -> None:
    mode = "fail-open" if fail_open else "fail-closed"
    figures = Figures(f"sidecar-sigkill-{mode}")
    t = Timeline()
    recoveries: list[float] = []
    outages: list[float] = []
    startups: list[float] = []
    with running_edge(tmp_path, restartable_pg.url, envoy={"failure_mode_allow": fail_open}) as edge:
        assert edge.sidecar is not None
        warm(edge.url)
        with Load(edge.url, standard_mix()) as load:
            time.sleep(PHASE_S)
            for n in range(ROUNDS):
                killed = t.mark(f"kill{n}")
                edge.sidecar.kill()
                figures.faults_injected += 1
                time.sleep(PHASE_S)
                restarted = t.mark(f"restart{n}")
                edge.sidecar.start()
                listening = t.mark(f"listening{n}")
                first = load.wait_for(lambda a: a.ok and a.shot.kind in DECIDED_BY_SIDECAR, restarted, 30)
                assert first is not None, "the edge did not recover within 30 s of the restart"
                t.marks[f"recovered{n}"] = first.done_at
                figures.faults_survived += 1
                startups.append(listening - restarted)
                recoveries.append(first.done_at - restarted)
                outages.append(first.done_at - killed)
                time.sleep(PHASE_S)
        answers = load.snapshot()
        assert not load.crashes, load.crashes
        receipts_misrouted = misroutes(answers, edge.upstreams, fail_open=fail_open)

    # Before the first kill and after each recovery (plus a settling second): everything succeeds.
    # In between: the right answer, or the failure mode's.
    failure_ok = failure_mode_answer(fail_open)
    wrong: list[str] = []
    for answer in answers:
        down = any(
            t[f"kill{n}"] - 1.0 <= answer.sent_at < t[f"recovered{n}"] + 1.0
            for n in range(ROUNDS)  # a request in flight at the kill may fail as well
        )
        good = failure_ok(answer) if down else answer.ok
        if not good:
            wrong.append(f"{'down' if down else 'up'}: {answer.shot.kind} → {answer.status} {answer.upstream}")
    rows = stored_rows(restartable_pg.url)
    lost = lost_payloads(answers, rows)

    figures.requests = len(answers)
    figures.answers = summarize(answers)
    figures.misrouted = len(receipts_misrouted)
    figures.lost = len(lost)
    figures.unanswered = len(unanswered(answers))
    figures.duplicates = duplicates(rows)
    figures.timings_s = {
        "sidecar_start_max": seconds(max(startups)),
        "recovery_after_restart_max": seconds(max(recoveries)),
        "outage_max": seconds(max(outages)),
    }
    figures.notes.append(f"{ROUNDS} kill(s), {PHASE_S}s phases, 2 client threads")
    figures.write()

    assert receipts_misrouted == []
    assert unanswered(answers) == []
    assert lost == []
    assert wrong == [], f"{len(wrong)} wrong answers, e.g. {wrong[:5]}"
    during = [a for n in range(ROUNDS) for a in between(answers, t[f"kill{n}"], t[f"restart{n}"])]
    assert any(not a.ok for a in during if a.shot.kind in THROUGH_SIDECAR), "the kill had no visible effect"


def test_sigterm_finishes_in_flight_refuses_new_and_exits_within_grace(
    tmp_path: Path, restartable_pg: RestartablePostgres
) -> None:
    """In-flight stored webhooks (held on a table lock) finish with 202 and their rows after
    SIGTERM; requests arriving during the drain get Envoy's 503 at once; the process exits within
    GRACE_S of the signal."""
    figures = Figures("sidecar-sigterm")
    url = restartable_pg.url
    # 5 s per ext_proc message, so the sidecar's budget (80 %) outlasts the held lock.
    overrides = {"envoy": {"message_timeout_ms": 5000}}
    with running_edge(tmp_path, url, **overrides) as edge:
        assert edge.sidecar is not None and edge.sidecar.process is not None
        warm(edge.url)
        in_flight: list[Answer] = []
        shots = [github_shot(4712) for _ in range(3)]

        def post(shot: Shot) -> None:
            import httpx

            with httpx.Client(timeout=20) as client:
                in_flight.append(send(client, edge.url, shot))

        refused: list[Answer] = []
        with psycopg.connect(url, autocommit=True) as blocker:
            blocker.execute("BEGIN")
            blocker.execute("LOCK TABLE webhook_payload IN ACCESS EXCLUSIVE MODE")
            threads = [threading.Thread(target=post, args=(shot,)) for shot in shots]
            for thread in threads:
                thread.start()
            _wait_for_lock_waiters(url)
            signalled = time.monotonic()
            edge.sidecar.process.send_signal(signal.SIGTERM)
            figures.faults_injected += 1
            time.sleep(0.3)
            import httpx

            with httpx.Client(timeout=20) as client:
                for shot in (slack_shot("T0ACME", "us"), github_shot(4711), slack_shot("T0GLOBEX", "de")):
                    refused.append(send(client, edge.url, shot))
            blocker.execute("COMMIT")
        for thread in threads:
            thread.join(20)
        edge.sidecar.process.wait(GRACE_S + 10)
        exit_s = time.monotonic() - signalled
        exit_code = edge.sidecar.process.returncode

        # And once more under load: SIGTERM while requests keep coming, then a fresh sidecar.
        edge.sidecar.start()
        warm(edge.url)
        with Load(edge.url, standard_mix()) as load:
            time.sleep(PHASE_S)
            loaded_signal = time.monotonic()
            edge.sidecar.process.send_signal(signal.SIGTERM)
            figures.faults_injected += 1
            edge.sidecar.process.wait(GRACE_S + 10)
            loaded_exit_s = time.monotonic() - loaded_signal
            loaded_exit_code = edge.sidecar.process.returncode
            time.sleep(0.5)
            restarted = time.monotonic()
            edge.sidecar.start()
            first = load.wait_for(lambda a: a.ok and a.shot.kind in DECIDED_BY_SIDECAR, restarted, 30)
            time.sleep(PHASE_S)
        answers = load.snapshot()
        receipts_misrouted = misroutes([*answers, *in_flight, *refused], edge.upstreams)

    rows = stored_rows(url)
    everything = [*in_flight, *refused, *answers]
    lost = lost_payloads(everything, rows)
    wrong_under_load = [f"{a.shot.kind} → {a.status} {a.upstream}" for a in answers if not (a.ok or a.status == 503)]
    figures.faults_survived = int(exit_code == 0) + int(loaded_exit_code == 0)
    figures.requests = len(everything)
    figures.answers = summarize(everything)
    figures.misrouted = len(receipts_misrouted)
    figures.lost = len(lost)
    figures.unanswered = len(unanswered(everything))
    figures.duplicates = duplicates(rows)
    figures.timings_s = {
        "exit_after_sigterm_with_in_flight": seconds(exit_s),
        "exit_after_sigterm_under_load": seconds(loaded_exit_s),
        "refused_answer_max": seconds(max(a.elapsed for a in refused)),
        "grace_period": GRACE_S,
    }
    if first is not None:
        figures.timings_s["recovery_after_restart"] = seconds(first.done_at - restarted)
    figures.write()

    assert [a.status for a in in_flight] == [202, 202, 202], in_flight
    assert [(a.status, a.error) for a in refused] == [(503, None)] * 3, refused
    assert max(a.elapsed for a in refused) < 1.0, "refusals must be prompt, not a wait for the drain"
    assert exit_code == 0 and loaded_exit_code == 0
    assert exit_s <= GRACE_S and loaded_exit_s <= GRACE_S
    assert receipts_misrouted == [] and lost == [] and unanswered(everything) == []
    assert wrong_under_load == [], wrong_under_load[:5]
    assert first is not None


def _wait_for_lock_waiters(url: str, timeout_s: float = 10) -> None:
    """Until the outbox write waits for the lock: the stored webhooks are in flight in the sidecar
    (group commit may put them all in one transaction, so one waiting session is enough), plus a
    moment for the stragglers to join the next batch."""
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()
            if row is not None and row[0] >= 1:
                time.sleep(0.3)
                return
            time.sleep(0.02)
    raise AssertionError("no request ever blocked on the outbox lock")
