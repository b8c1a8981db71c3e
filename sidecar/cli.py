"""``silo-router``: every subcommand takes ``--config FILE`` and reaches the same database as ``up``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from sidecar import __version__, config
from sidecar.config import Settings
from sidecar.errors import SiloError

Command = Callable[[argparse.Namespace, Settings], int]


def _up(args: argparse.Namespace, settings: Settings) -> int:
    from sidecar import app

    asyncio.run(app.up(settings, directory_file=args.directory, demo_upstreams=args.demo_upstreams))
    return 0


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from sidecar import app

    asyncio.run(app.serve(settings))
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

    envoy = commands.add_parser("envoy", help="the Envoy configuration")
    envoy_commands = envoy.add_subparsers(dest="envoy_command", required=True)
    render = envoy_commands.add_parser("render", parents=[common], help="print the Envoy bootstrap")
    render.add_argument("--output", "-o", help="write here instead of stdout")
    render.set_defaults(run=_envoy_render)
    check = envoy_commands.add_parser("validate", parents=[common], help="envoy --mode validate the config")
    check.add_argument("file", nargs="?", help="a config file (default: the rendered one)")
    check.set_defaults(run=_envoy_validate)
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
