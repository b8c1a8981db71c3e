"""Operator tools: stats, list, show, replay, purge (and their CLI), against real PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from delivery_fakes import FakeClock
from test_worker import enqueue, rows

from sidecar import db
from sidecar.cli import main
from sidecar.core.decision import ReplyTarget
from sidecar.outbox import admin
from sidecar.outbox.admin import Filters

pytestmark = pytest.mark.db


async def set_state(pool: db.Pool, ids: list[int], state: str, **columns: Any) -> None:
    assignments = ", ".join(f"{name} = %({name})s" for name in columns)
    async with pool.connection() as conn:
        await conn.execute(
            f"UPDATE webhook_payload SET state = %(state)s{', ' + assignments if assignments else ''}"
            " WHERE id = ANY(%(ids)s)",
            {"state": state, "ids": ids, **columns},
        )


@pytest.fixture
async def mixed(pool: db.Pool) -> dict[str, list[int]]:
    """github:42 → de (2 dead, 1 pending), us (1 delivered); gitlab:7 → de (2 dead)."""
    github_de = [(await enqueue(pool, n))[0] for n in range(3)]
    github_us = await enqueue(pool, 3, regions=("us",))
    gitlab_de = [(await enqueue(pool, n, mailbox="7", provider="gitlab"))[0] for n in (4, 5)]
    await set_state(pool, github_de[:2] + gitlab_de, "dead", attempts=10, last_status=500, last_error="max_attempts")
    await set_state(pool, github_us, "delivered")
    return {"github_de": github_de, "github_us": github_us, "gitlab_de": gitlab_de}


def test_durations() -> None:
    assert [admin.parse_duration(t) for t in ("90", "90s", "15m", "6h", "3d", "1.5h")] == [
        90,
        90,
        900,
        21600,
        259200,
        5400,
    ]
    for bad in ("", "3w", "h", "-1d"):
        with pytest.raises(ValueError):
            admin.parse_duration(bad)


def test_filters_check_the_state() -> None:
    with pytest.raises(ValueError):
        Filters(state="gone")


async def test_stats_by_state_region_and_provider(pool: db.Pool, mixed: dict[str, list[int]]) -> None:
    clock = FakeClock()
    found = {(c.state, c.region, c.provider): c.rows for c in await admin.stats(pool, Filters(), clock())}
    assert found == {
        ("dead", "de", "github"): 2,
        ("dead", "de", "gitlab"): 2,
        ("delivered", "us", "github"): 1,
        ("pending", "de", "github"): 1,
    }
    only_dead = await admin.stats(pool, Filters(state="dead", provider="gitlab"), clock())
    assert [(c.state, c.provider, c.rows) for c in only_dead] == [("dead", "gitlab", 2)]


async def test_list_filters_and_pages(pool: db.Pool, mixed: dict[str, list[int]]) -> None:
    now = FakeClock()()
    dead = await admin.list_rows(pool, Filters(state="dead"), now)
    assert [r.id for r in dead] == mixed["github_de"][:2] + mixed["gitlab_de"]
    assert dead[0].last_status == 500 and dead[0].next_attempt_in_s is None
    page = await admin.list_rows(pool, Filters(state="dead"), now, limit=2, after_id=dead[1].id)
    assert [r.id for r in page] == mixed["gitlab_de"]
    assert [r.id for r in await admin.list_rows(pool, Filters(mailbox="gitlab:*"), now)] == mixed["gitlab_de"]
    assert [r.id for r in await admin.list_rows(pool, Filters(mailbox="gitlab:7"), now)] == mixed["gitlab_de"]
    assert await admin.list_rows(pool, Filters(mailbox="gitlab:"), now) == []
    assert [r.region_name for r in await admin.list_rows(pool, Filters(region="us"), now)] == ["us"]
    assert await admin.list_rows(pool, Filters(older_than_s=3600), now) == []
    assert len(await admin.list_rows(pool, Filters(older_than_s=3600), now + 7200)) == 6
    assert len(await admin.list_rows(pool, Filters(newer_than_s=3600), now + 7200)) == 0


async def test_show_masks_credentials_and_follow_up_urls(pool: db.Pool) -> None:
    url = "https://hooks.slack.com/actions/T0001/1234/secretsecret"
    [row_id] = await enqueue(pool, 1, reply_to=ReplyTarget("slack", url), provider="slack")
    async with pool.connection() as conn:
        await conn.execute(
            'UPDATE webhook_payload SET request_headers = request_headers || \'{"authorization": "JWT abc"}\''
        )
    detail = await admin.show(pool, row_id, FakeClock()())
    assert detail is not None
    assert detail.request_headers["authorization"] == "[masked]"
    assert detail.request_headers["x-hub-signature-256"].startswith("sha256=")
    assert detail.request_body == b'{"id": 1, "mailbox": "42"}'
    assert detail.followup is not None and "secretsecret" not in detail.followup["url"]
    revealed = await admin.show(pool, row_id, FakeClock()(), reveal=True)
    assert revealed is not None and revealed.request_headers["authorization"] == "JWT abc"
    assert revealed.followup is not None and revealed.followup["url"] == url
    assert await admin.show(pool, 999, 0.0) is None


async def test_replay_puts_dead_letters_back_in_id_order(pool: db.Pool, mixed: dict[str, list[int]]) -> None:
    clock = FakeClock()
    progress: list[tuple[int, int]] = []
    done = await admin.replay(pool, Filters(provider="github"), clock(), lambda d, t: progress.append((d, t)))
    assert done == 2 and progress == [(2, 2)]
    by_id = {row["id"]: row for row in await rows(pool)}
    for row_id in mixed["github_de"][:2]:
        row = by_id[row_id]
        assert (row["state"], row["attempts"], row["replays"]) == ("pending", 0, 1)
        assert row["replayed_at"] is not None and row["schedule_for"] <= row["replayed_at"]
    assert {by_id[i]["state"] for i in mixed["gitlab_de"]} == {"dead"}
    with pytest.raises(ValueError):
        await admin.replay(pool, Filters(state="pending"), clock())


async def test_replay_reports_progress_in_batches(pool: db.Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [(await enqueue(pool, n))[0] for n in range(5)]
    await set_state(pool, ids, "dead")
    monkeypatch.setattr(admin, "BATCH", 2)
    progress: list[tuple[int, int]] = []
    assert await admin.replay(pool, Filters(), FakeClock()(), lambda d, t: progress.append((d, t))) == 5
    assert progress == [(2, 5), (4, 5), (5, 5)]


async def test_purge_needs_a_state_and_force_for_pending(pool: db.Pool, mixed: dict[str, list[int]]) -> None:
    now = FakeClock()()
    with pytest.raises(ValueError):
        await admin.purge(pool, Filters(), now)
    with pytest.raises(ValueError):
        await admin.purge(pool, Filters(state="pending"), now)
    assert await admin.purge(pool, Filters(state="dead", provider="gitlab"), now) == 2
    assert await admin.purge(pool, Filters(state="delivered"), now) == 1
    assert await admin.purge(pool, Filters(state="pending"), now, allow_pending=True) == 1
    assert [row["id"] for row in await rows(pool)] == mixed["github_de"][:2]


# -- the CLI ------------------------------------------------------------------------------------------


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "silo-router.yaml"
    path.write_text(yaml.safe_dump({"regions": {"de": {"address": "127.0.0.1:1"}}}))
    return path


def run_cli(args: list[str], config_file: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv("DATABASE_URL", db_url)
    return main([*args[:2], "--config", str(config_file), *args[2:]])


async def test_cli(
    pool: db.Pool,
    mixed: dict[str, list[int]],
    config_file: Path,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import asyncio

    def cli(*args: str) -> tuple[int, str, str]:
        status = run_cli(list(args), config_file, db_url, monkeypatch)
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    # main() runs its own event loop: call it from a thread, as a shell would from another process.
    status, out, _ = await asyncio.to_thread(cli, "outbox", "stats")
    assert status == 0 and "dead" in out and "gitlab" in out
    status, out, _ = await asyncio.to_thread(cli, "outbox", "list", "--state", "dead", "--json")
    assert status == 0 and len(out.splitlines()) == 4
    status, out, _ = await asyncio.to_thread(cli, "outbox", "show", str(mixed["gitlab_de"][0]))
    assert status == 0 and "gitlab:7" in out and '"id": 4' in out
    status, out, _ = await asyncio.to_thread(cli, "outbox", "replay", "--provider", "gitlab", "--dry-run")
    assert (status, out.strip()) == (0, "would be replayed: 2")
    status, out, err = await asyncio.to_thread(cli, "outbox", "replay", "--provider", "gitlab")
    assert (status, out.strip()) == (0, "replayed: 2") and "replayed 2/2" in err
    status, _, err = await asyncio.to_thread(cli, "outbox", "purge", "--provider", "gitlab")
    assert status == 2 and "--state" in err
    status, out, _ = await asyncio.to_thread(cli, "outbox", "purge", "--state", "delivered")
    assert (status, out.strip()) == (0, "purged: 1")
    status, _, err = await asyncio.to_thread(cli, "outbox", "show", "99999")
    assert status == 1
