"""``apinalytics apps create|list|rotate-keys|delete``: applications and their keys,
at a terminal. Keys are printed once, when they are made; nothing else shows them.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC
from typing import Any

import asyncpg

from . import apps, localdb, migrate
from .serve_cli import cli_name
from .settings import Settings


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``apps`` and its commands to the ``apinalytics`` subparsers."""
    p = sub.add_parser("apps", help="manage applications")
    p.set_defaults(help_of=p)
    apps_sub = p.add_subparsers(dest="apps_command")
    p = apps_sub.add_parser("create", parents=[common], help="create an app and print its keys")
    p.add_argument("--name", required=True, help="1 to 100 characters, no control characters")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_apps_create)
    p = apps_sub.add_parser("list", parents=[common], help="list apps (no keys)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_apps_list)
    p = apps_sub.add_parser("rotate-keys", parents=[common], help="replace an app's keys")
    p.add_argument("app_id")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--write", action="store_true", help="only the write key")
    which.add_argument("--read", action="store_true", help="only the read key")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_apps_rotate)
    p = apps_sub.add_parser("delete", parents=[common], help="delete an app and all its data")
    p.add_argument("app_id")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_apps_delete)


async def _connect(settings: Settings) -> asyncpg.Connection:
    return await migrate.connect_migrated(await localdb.dsn_for(settings))


def _print_keys(app: apps.NewApp, as_json: bool) -> None:
    out: dict[str, Any] = {"app_id": app.app_id}
    if app.write_key:
        out["write_key"] = app.write_key
    if app.read_key:
        out["read_key"] = app.read_key
    if as_json:
        print(json.dumps(out))
        return
    print(f"Application ID: {app.app_id}")
    if app.write_key:
        print(f"Write key:      {app.write_key}")
    if app.read_key:
        print(f"Read key:       {app.read_key}")
    print("Keys are shown only now; store them safely.", file=sys.stderr)


async def cmd_apps_create(args: argparse.Namespace, settings: Settings) -> int:
    try:
        name = apps.checked_name(args.name)
    except ValueError as exc:
        print(f"apinalytics: {exc}", file=sys.stderr)
        return 2
    conn = await _connect(settings)
    try:
        app = await apps.create(conn, name)
    finally:
        await conn.close()
    _print_keys(app, args.json)
    return 0


async def cmd_apps_list(args: argparse.Namespace, settings: Settings) -> int:
    conn = await _connect(settings)
    try:
        rows = await apps.list_apps(conn)
    finally:
        await conn.close()
    if args.json:
        print(
            json.dumps(
                [
                    {"app_id": a.app_id, "name": a.name, "created_at": a.created_at.isoformat()}
                    for a in rows
                ]
            )
        )
    else:
        print("APP ID\tNAME\tCREATED (UTC)")
        for a in rows:
            print(f"{a.app_id}\t{a.name}\t{a.created_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}")
        if not rows:
            print(f"No applications yet: {cli_name()} apps create --name NAME", file=sys.stderr)
    return 0


async def cmd_apps_rotate(args: argparse.Namespace, settings: Settings) -> int:
    kinds = (
        {apps.KeyKind.WRITE}
        if args.write
        else {apps.KeyKind.READ}
        if args.read
        else {apps.KeyKind.WRITE, apps.KeyKind.READ}
    )
    conn = await _connect(settings)
    try:
        app = await apps.rotate(conn, args.app_id, kinds)
    finally:
        await conn.close()
    if app is None:
        print(f"apinalytics: no application {args.app_id}", file=sys.stderr)
        return 2
    _print_keys(app, args.json)
    return 0


async def cmd_apps_delete(args: argparse.Namespace, settings: Settings) -> int:
    if not args.yes:
        if not sys.stdin.isatty():
            print("apinalytics: deleting needs --yes when not run at a terminal", file=sys.stderr)
            return 2
        answer = input(f"Delete application {args.app_id} and ALL of its events? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("not deleted")
            return 1
    conn = await _connect(settings)
    try:
        async with conn.transaction():
            found = await apps.delete(conn, args.app_id)
    finally:
        await conn.close()
    if not found:
        print(f"apinalytics: no application {args.app_id}", file=sys.stderr)
        return 2
    print(f"deleted application {args.app_id} and its data")
    return 0
