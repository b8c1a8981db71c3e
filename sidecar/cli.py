"""``silo-router``: every subcommand takes ``--config FILE`` and reaches the same database as ``up``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from sidecar import __version__, config
from sidecar.config import Settings
from sidecar.errors import SiloError

Command = Callable[[argparse.Namespace, Settings], int]
T = TypeVar("T")


def _up(args: argparse.Namespace, settings: Settings) -> int:
    from sidecar import app
    from sidecar.wire import server

    main = app.up(settings, directory_file=args.directory, demo_upstreams=args.demo_upstreams)
    server.run(main, loop=server.loop_from_env())  # uvloop unless SILO_ROUTER_LOOP=asyncio
    return 0


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from sidecar import app
    from sidecar.wire import server

    settings = replace(settings, sidecar=settings.sidecar.for_process(args.process))
    server.run(app.serve(settings), loop=server.loop_from_env())  # uvloop unless SILO_ROUTER_LOOP=asyncio
    return 0


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from sidecar import db

    async def run() -> list[str]:
        return await db.migrate(await asyncio.to_thread(db.database_url, settings))

    applied = asyncio.run(run())
    print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")
    return 0


def _directory_load(args: argparse.Namespace, settings: Settings) -> int:
    from sidecar import db
    from sidecar.directory.loader import load_directory, read_directory_file

    data = read_directory_file(args.file)

    async def run() -> object:
        dsn = await asyncio.to_thread(db.database_url, settings)
        await db.migrate(dsn)
        return await load_directory(dsn, data)

    print(asyncio.run(run()))
    return 0


def _region_add(args: argparse.Namespace, settings: Settings) -> int:
    from sidecar.regions import add_region, region_row

    region_row(args.name, args.address)  # refuse a typo before starting or reaching any database
    outcome = asyncio.run(_with_database(settings, lambda dsn: add_region(dsn, args.name, args.address)))
    print(f"region {args.name} at {args.address}: {outcome}")
    _warn_if_static(settings)
    _warn_if_in_file(settings, args.name)
    return 0


def _region_remove(args: argparse.Namespace, settings: Settings) -> int:
    from sidecar.regions import remove_region

    removed, mapped = asyncio.run(_with_database(settings, lambda dsn: remove_region(dsn, args.name)))
    if not removed:
        print(f"silo-router: no region {args.name}", file=sys.stderr)
        return 1
    print(f"region {args.name}: removed")
    if mapped:
        print(f"warning: {mapped} organization(s) still map to {args.name}: their webhooks get the unknown-region 500")
    _warn_if_static(settings)
    _warn_if_in_file(settings, args.name)
    return 0


def _region_list(args: argparse.Namespace, settings: Settings) -> int:
    from sidecar.regions import list_regions

    for row in asyncio.run(_with_database(settings, list_regions)):
        print(f"{row.name}\t{row.address or '-'}")
    return 0


async def _with_database(settings: Settings, action: Callable[[str], Awaitable[T]]) -> T:
    from sidecar import db

    dsn = await asyncio.to_thread(db.database_url, settings)
    await db.migrate(dsn)
    return await action(dsn)


def _warn_if_static(settings: Settings) -> None:
    if settings.envoy.mode != "xds":
        print("note: envoy.mode is static: Envoy routes the settings file's regions, not this table", file=sys.stderr)


def _warn_if_in_file(settings: Settings, name: str) -> None:
    if name in settings.regions:
        # xds mode seeds the table from the file at every start: the file would undo this change.
        print(f"note: {name} is also in {settings.source}: a restart seeds it from there again", file=sys.stderr)


def _envoy_render(args: argparse.Namespace, settings: Settings) -> int:
    from sidecar.xds.bootstrap import render_yaml

    text = render_yaml(settings)
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _envoy_validate(args: argparse.Namespace, settings: Settings) -> int:
    from sidecar.xds.bootstrap import render_yaml
    from sidecar.xds.envoy_binary import validate

    validate(Path(args.file).read_text() if args.file else render_yaml(settings))
    print("envoy config OK")
    return 0


def _providers(args: argparse.Namespace, settings: Settings) -> int:
    from sidecar import catalog

    sys.stdout.write(catalog.FORMATS[args.format](catalog.rows()))
    return 0


def _explain(args: argparse.Namespace, settings: Settings) -> int:
    from sidecar import explain

    request = explain.read_request(args.file)
    if settings.source is None:
        print("silo-router: no settings file: no regions, secrets or shed rules are known", file=sys.stderr)
    result = asyncio.run(explain.explain_with_settings(settings, request, offline=args.offline))
    sys.stdout.write(explain.format_explanation(result, args.format))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="silo-router", description=__doc__)
    parser.add_argument("--version", action="version", version=f"silo-router {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=None, help="settings file (default: ./silo-router.yaml)")
    common.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", parents=[common], help="run PostgreSQL, migrations, the sidecar and Envoy")
    up.add_argument("--directory", type=Path, help="load this directory file after migrating")
    up.add_argument("--demo-upstreams", action="store_true", help="start tiny control/region upstreams")
    up.set_defaults(run=_up)

    serve = commands.add_parser("serve", parents=[common], help="run the ext_proc sidecar only")
    serve.add_argument(
        "--process",
        type=int,
        default=0,
        metavar="K",
        help="which of sidecar.processes this is (0-based): listens on the gRPC and metrics ports + K",
    )
    serve.set_defaults(run=_serve)

    migrate = commands.add_parser("migrate", parents=[common], help="apply the SQL migrations")
    migrate.set_defaults(run=_migrate)

    directory = commands.add_parser("directory", help="the integration/organization directory")
    directory_commands = directory.add_subparsers(dest="directory_command", required=True)
    load = directory_commands.add_parser("load", parents=[common], help="upsert a YAML or JSON directory file")
    load.add_argument("file", type=Path)
    load.set_defaults(run=_directory_load)

    providers = commands.add_parser("providers", parents=[common], help="the provider table, from the parsers")
    providers.add_argument("--format", choices=["table", "markdown", "json"], default="table")
    providers.set_defaults(run=_providers)

    explain = commands.add_parser("explain", parents=[common], help="where a raw HTTP request would go, and why")
    explain.add_argument("file", nargs="?", default="-", help="the raw request (curl --trace output too); - is stdin")
    explain.add_argument("--format", choices=["text", "json"], default="text")
    explain.add_argument("--offline", type=Path, metavar="DIRECTORY_FILE", help="use this directory file, no database")
    explain.set_defaults(run=_explain)

    region = commands.add_parser("region", help="the region table (envoy.mode: xds routes by it, live)")
    region_commands = region.add_subparsers(dest="region_command", required=True)
    add = region_commands.add_parser("add", parents=[common], help="add a region, or move it to a new address")
    add.add_argument("name")
    add.add_argument("address", help="host:port of the region's upstream")
    add.set_defaults(run=_region_add)
    remove = region_commands.add_parser("remove", parents=[common], help="remove a region; its traffic drains")
    remove.add_argument("name")
    remove.set_defaults(run=_region_remove)
    region_commands.add_parser("list", parents=[common], help="the regions and their addresses").set_defaults(
        run=_region_list
    )

    envoy = commands.add_parser("envoy", help="the Envoy configuration")
    envoy_commands = envoy.add_subparsers(dest="envoy_command", required=True)
    render = envoy_commands.add_parser("render", parents=[common], help="print the Envoy bootstrap")
    render.add_argument("--output", "-o", help="write here instead of stdout")
    render.set_defaults(run=_envoy_render)
    check = envoy_commands.add_parser("validate", parents=[common], help="envoy --mode validate the config")
    check.add_argument("file", nargs="?", help="a config file (default: the rendered one)")
    check.set_defaults(run=_envoy_validate)

    from sidecar.outbox import commands as outbox_commands

    outbox_commands.register(commands, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from sidecar import logs

    # Text on a terminal, JSON lines everywhere else (Kubernetes, CI): what a person or a collector reads.
    logs.configure(getattr(args, "log_level", "INFO"), json=not sys.stderr.isatty())
    try:
        settings = config.load(args.config)
        logs.set_secrets(logs.secrets_of(settings))
        run: Command = args.run
        return run(args, settings)
    except SiloError as exc:
        print(f"silo-router: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
