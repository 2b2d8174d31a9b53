"""``skyeim-admin`` (``python -m skyeim.admin``): the operator's tool for the
stores' databases. Each command finds the databases the way the services do,
in their YAML files: ``-f etc/message.yaml -f ...`` or ``--config-dir etc``
(the default: etc/message.yaml, etc/friend.yaml, etc/auth.yaml), with relative
SQLite paths taken from the working directory, as the services take them.

    status              each store's schema revision, and what this release needs
    migrate [--to REV]  bring the schemas to this release's (run after a backup)
    check               compare the databases' tables with this release's models
    backup DIR          a consistent copy of all stores while the system runs
    restore DIR         put a backup into empty databases (--force: overwrite)
    revision STORE -m   (developers) write the next migration of a changed table

Exit status: 0 done (status/check: nothing to do); 1 refused or failed, or
status/check found something to do; 2 bad arguments or configuration.
Docs: docs/operations.md, "Upgrades" and "Backups".
"""
from __future__ import annotations

import argparse
import functools
import sys

import sqlalchemy as sa

from skyeim import __version__, config, migrations
from skyeim.admin import backup as backups
from skyeim.admin import schema
from skyeim.admin.stores import AdminError, find_stores, first_line

PG_TOOL_TIMEOUT = 3600.0        # s one pg_dump or pg_restore may take, by default


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    say = functools.partial(print, flush=True)
    try:
        if args.command == "revision":
            schema.revision(args.store, args.message, say)
            return 0
        stores = find_stores(args.config, args.config_dir)
        if args.command == "status":
            return 0 if schema.status(stores, say) else 1
        if args.command == "check":
            return 0 if schema.check(stores, say) else 1
        if args.command == "migrate":
            schema.migrate(stores, args.to, say)
        elif args.command == "backup":
            backups.backup(stores, args.dir, say, args.timeout)
        elif args.command == "restore":
            backups.restore(stores, args.dir, args.force, say, args.timeout)
        return 0
    except config.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except AdminError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except sa.exc.DBAPIError as e:
        print(f"error: the database: {first_line(e.orig if e.orig is not None else e)}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skyeim-admin", description="Schema upgrades and backups of SkyeIM's databases.")
    parser.add_argument("--version", action="version", version=f"skyeim {__version__}")
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("-f", "--config", action="append", default=[], metavar="FILE",
                       help="a service's YAML file (message*.yaml, friend*.yaml, auth*.yaml); repeat for each")
    where.add_argument("--config-dir", metavar="DIR",
                       help="the directory of message.yaml, friend.yaml and auth.yaml (default: etc)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("status", parents=[where], help="each store's schema revision and this release's")
    migrate = commands.add_parser("migrate", parents=[where], help="bring the schemas to this release's")
    migrate.add_argument("--to", default="head", metavar="REV",
                         help="a revision of this release (one store only; lower ones downgrade)")
    commands.add_parser("check", parents=[where], help="compare the tables with this release's models")
    for name, text in (("backup", "copy every store into DIR (new or empty), while the system runs"),
                       ("restore", "put the backup in DIR into the configured, empty databases")):
        cmd = commands.add_parser(name, parents=[where], help=text)
        cmd.add_argument("dir", metavar="DIR")
        cmd.add_argument("--timeout", type=float, default=PG_TOOL_TIMEOUT, metavar="S",
                         help=f"seconds one pg_dump/pg_restore may take (default {PG_TOOL_TIMEOUT:g})")
        if name == "restore":
            cmd.add_argument("--force", action="store_true",
                             help="overwrite databases that hold data (stop the services first)")
    revision = commands.add_parser("revision", help="(developers) write the next migration of STORE")
    revision.add_argument("store", choices=migrations.STORES)
    revision.add_argument("-m", "--message", required=True, help="what the revision changes")
    return parser
