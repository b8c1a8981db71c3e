"""The region table (``sidecar/regions.py``) and the feed that turns it into snapshots, against
PostgreSQL: the push path from a committed row to a published snapshot, LISTEN/NOTIFY included."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import psycopg
import pytest

from sidecar import config, db
from sidecar.config import Address
from sidecar.directory.listen import listen_for_changes
from sidecar.directory.loader import RegionRow
from sidecar.regions import RegionError, add_region, list_regions, remove_region, seed_regions
from sidecar.xds.ads import ControlPlane, Invalidations, RegionFeed

pytestmark = pytest.mark.db

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = config.from_mapping({"envoy": {"mode": "xds"}}, {}, ROOT)


async def test_add_moves_and_lists_regions(db_url: str) -> None:
    assert await add_region(db_url, "us", "127.0.0.1:9001") == "added"
    assert await add_region(db_url, "us", "127.0.0.1:9001") == "unchanged"
    assert await add_region(db_url, "us", "10.0.0.7:9001") == "updated"
    assert await add_region(db_url, "de", "de.example.com:443") == "added"
    assert await list_regions(db_url) == [RegionRow("de", "de.example.com:443"), RegionRow("us", "10.0.0.7:9001")]


@pytest.mark.parametrize(
    ("name", "address", "problem"),
    [("eu", "127.0.0.1:70000", "port 70000"), ("eu", "127.0.0.1", "host:port"), ("e u", "127.0.0.1:1", "bad region")],
)
async def test_add_refuses_what_envoy_would(db_url: str, name: str, address: str, problem: str) -> None:
    with pytest.raises(config.ConfigError, match=problem):
        await add_region(db_url, name, address)
    assert await list_regions(db_url) == []
    assert issubclass(RegionError, config.ConfigError)


async def test_remove_says_which_organizations_still_map_there(db_url: str) -> None:
    await add_region(db_url, "eu", "127.0.0.1:9003")
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO organization_mapping (organization_id, slug, region_name) VALUES (4, 'o', 'eu')"
        )
    assert await remove_region(db_url, "eu") == (True, 1)
    assert await remove_region(db_url, "eu") == (False, 1)
    assert await list_regions(db_url) == []


async def test_seeding_upserts_the_settings_regions(db_url: str) -> None:
    await add_region(db_url, "us", "10.0.0.7:9001")
    await add_region(db_url, "ap", "10.0.0.9:9001")
    await seed_regions(db_url, {"us": Address("127.0.0.1", 9001), "de": Address("127.0.0.1", 9002)})
    assert await list_regions(db_url) == [
        RegionRow("ap", "10.0.0.9:9001"),  # not in the file: left alone
        RegionRow("de", "127.0.0.1:9002"),
        RegionRow("us", "127.0.0.1:9001"),  # the file wins at start
    ]


async def test_the_feed_publishes_a_new_version_only_when_routable_regions_change(db_url: str, pool: db.Pool) -> None:
    plane = ControlPlane()
    feed = RegionFeed(plane, pool, SETTINGS)
    await add_region(db_url, "us", "127.0.0.1:9001")
    assert await feed.refresh() is True
    assert plane.snapshot is not None and (plane.snapshot.version, plane.snapshot.names) == (1, {"us"})
    assert await feed.refresh() is False
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await conn.execute("INSERT INTO region (name, address) VALUES ('later', NULL)")  # known, not routed
    assert await feed.refresh() is False
    await add_region(db_url, "us", "127.0.0.1:9011")  # moved: same names, new cluster
    assert await feed.refresh() is True
    assert plane.snapshot.version == 2 and plane.snapshot.regions == {"us": Address("127.0.0.1", 9011)}


async def test_a_committed_row_reaches_the_snapshot_through_listen_notify(db_url: str, pool: db.Pool) -> None:
    plane = ControlPlane()
    feed = RegionFeed(plane, pool, SETTINGS)
    await feed.refresh()
    stop, listening = asyncio.Event(), asyncio.Event()
    tasks = [
        asyncio.create_task(listen_for_changes(db_url, Invalidations((feed,)), stop, on_listening=listening.set)),
        asyncio.create_task(feed.run(stop)),
    ]
    try:
        await asyncio.wait_for(listening.wait(), 10)
        started = time.monotonic()
        await add_region(db_url, "eu", "127.0.0.1:9003")
        while plane.snapshot is None or "eu" not in plane.snapshot.names:
            assert time.monotonic() - started < 2, "no snapshot with eu 2 s after the commit"
            await asyncio.sleep(0.01)
        await remove_region(db_url, "eu")
        while "eu" in plane.snapshot.names:
            assert time.monotonic() - started < 4
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks)


def test_the_cli_refuses_a_bad_address_before_touching_a_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sidecar import cli

    settings = tmp_path / "silo-router.yaml"
    settings.write_text("database_url: postgresql://nowhere.invalid/none\n")
    assert cli.main(["region", "add", "eu", "127.0.0.1:70000", "--config", str(settings)]) == 2
    assert "port 70000 is not between 1 and 65535" in capsys.readouterr().err
