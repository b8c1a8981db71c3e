"""PostgreSQL crashes (``pg_ctl stop -m immediate``) and comes back, under load.

* cached routes keep working throughout (the directory cache answers without the database);
* lookups the cache cannot answer get 503 with ``Retry-After``, never a guess;
* stored webhooks get 202 only with their rows (every 202's nonce is in ``webhook_payload``
  afterwards) and 503 with ``Retry-After`` otherwise;
* after recovery every request succeeds again, and once the 503'd webhooks are retried, as a
  provider would, nothing is missing.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from faultkit import (
    PHASE_S,
    ROUNDS,
    Answer,
    Figures,
    Load,
    RestartablePostgres,
    Timeline,
    duplicates,
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

pytestmark = [pytest.mark.faults, pytest.mark.db, pytest.mark.envoy, pytest.mark.slow]


def during_outage_ok(answer: Answer) -> bool:
    kind = answer.shot.kind
    if kind in ("routed", "control", "control_via_sidecar"):
        return answer.ok  # cached, or no database needed: unaffected
    # uncached lookups and outbox writes: success, or 503 with Retry-After
    return answer.ok or (answer.status == 503 and answer.retry_after is not None)


def test_postgres_restart_under_load(tmp_path: Path, restartable_pg: RestartablePostgres) -> None:
    figures = Figures("postgres-restart")
    pg = restartable_pg
    t = Timeline()
    store_recoveries: list[float] = []
    lookup_recoveries: list[float] = []
    outages: list[float] = []
    # Cached routes outlive an outage only while their entry is fresher than cache_ttl_s (60 s by
    # default): several rounds of outages must not run into it, so the test holds entries longer.
    with running_edge(tmp_path, pg.url, sidecar={"cache_ttl_s": 600}) as edge:
        warm(edge.url)
        with httpx.Client(timeout=5) as client:  # the cached routes of the load
            assert send(client, edge.url, slack_shot("T0GLOBEX", "de")).ok
        with Load(edge.url, standard_mix(uncached=True)) as load:
            time.sleep(PHASE_S)
            for n in range(ROUNDS):
                t.mark(f"down{n}")
                pg.stop("immediate")
                figures.faults_injected += 1
                time.sleep(2 * PHASE_S)
                t.mark(f"starting{n}")
                pg.start()
                up = t.mark(f"up{n}")
                stored = load.wait_for(lambda a: a.shot.kind == "stored" and a.ok, up, 60)
                looked_up = load.wait_for(lambda a: a.shot.kind == "uncached" and a.ok, up, 60)
                assert stored is not None and looked_up is not None, "no recovery within 60 s"
                t.marks[f"recovered{n}"] = max(stored.done_at, looked_up.done_at)
                figures.faults_survived += 1
                store_recoveries.append(stored.done_at - up)
                lookup_recoveries.append(looked_up.done_at - up)
                outages.append(t[f"recovered{n}"] - t[f"down{n}"])
                time.sleep(PHASE_S)
        answers = load.snapshot()
        assert not load.crashes, load.crashes
        receipts_misrouted = misroutes(answers, edge.upstreams)

        wrong: list[str] = []
        for answer in answers:
            down = any(t[f"down{n}"] - 0.5 <= answer.sent_at < t[f"recovered{n}"] + 1.0 for n in range(ROUNDS))
            if not (during_outage_ok(answer) if down else answer.ok):
                wrong.append(f"{'down' if down else 'up'}: {answer.shot.kind} → {answer.status} {answer.upstream}")
        rows_before_retry = stored_rows(pg.url)
        lost = lost_payloads(answers, rows_before_retry)

        # The provider's side: every webhook that got a 503 is sent again until it gets its 202.
        retried = [a for a in answers if a.shot.kind == "stored" and a.status != 202]
        retry_answers: list[Answer] = []
        with httpx.Client(timeout=10) as client:
            for answer in retried:
                for _ in range(20):
                    again = send(client, edge.url, answer.shot)
                    retry_answers.append(again)
                    if again.status == 202:
                        break
                    time.sleep(0.25)
    rows = stored_rows(pg.url)
    stored_shots = {a.shot.nonce: a.shot for a in answers if a.shot.kind == "stored"}
    missing = [n for n, shot in stored_shots.items() if sorted(set(rows.get(n, []))) != sorted(shot.regions)]

    figures.requests = len(answers)
    figures.answers = summarize(answers)
    figures.misrouted = len(receipts_misrouted)
    figures.lost = len(lost) + len(missing)
    figures.unanswered = len(unanswered(answers))
    figures.duplicates = duplicates(rows)
    figures.timings_s = {
        "outage_max": seconds(max(outages)),
        "store_recovery_after_start_max": seconds(max(store_recoveries)),
        "lookup_recovery_after_start_max": seconds(max(lookup_recoveries)),
    }
    figures.notes.append(f"{ROUNDS} crash(es), outage {2 * PHASE_S}s, {len(retried)} webhooks answered 503 and retried")
    figures.write()

    assert receipts_misrouted == []
    assert unanswered(answers) == []
    assert lost == [], "a 202 without its rows"
    assert missing == [], f"{len(missing)} webhooks missing after the retries"
    assert wrong == [], f"{len(wrong)} wrong answers, e.g. {wrong[:5]}"
    outage = [a for n in range(ROUNDS) for a in answers if t[f"down{n}"] <= a.sent_at < t[f"up{n}"]]
    assert any(a.status == 503 for a in outage if a.shot.kind == "stored"), "the outage had no visible effect"
    assert all(a.ok for a in outage if a.shot.kind == "routed"), "cached routes must keep working"
