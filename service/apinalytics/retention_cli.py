"""apinalytics retention show|set|apply: retention (and, on the Community edition,
compressed storage: set --compress-after) for DBAs, at a terminal or in cron.

Exit codes (documented in docs/retention.md), stable for scripts:

    0  done (also: nothing to drop)
    1  the database failed or is unreachable, or is not migrated
    2  usage error, or a destructive action without --yes and no terminal to ask at
    3  set refused: the setting would lose data or exact answers (reasons on stderr)
    4  not confirmed at the prompt: nothing changed

Over 300 lines: each command's parsing, confirmation and output sit side by side with
the exit codes above, so a DBA's script and this module are read against one table.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from . import compression, db, localdb, migrate, retention
from .edition import Edition
from .retention import FLAGS, RELATIONS, Chunk, format_duration
from .settings import Settings

OK, FAILED, USAGE, REFUSED, DECLINED = 0, 1, 2, 3, 4


def register(sub: Any) -> None:
    """Add ``retention`` and its commands to the ``apinalytics`` subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--dsn",
        "--database-url",
        dest="database_url",
        help="PostgreSQL URL (APINALYTICS_DATABASE_URL); default: the embedded local cluster",
    )
    common.add_argument(
        "--home", type=Path, help="project-local state directory (APINALYTICS_HOME)"
    )
    p = sub.add_parser(
        "retention",
        help="show, set and apply retention of raw events and rollups",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r = p.add_subparsers(dest="retention_command", required=True)

    p = r.add_parser("show", parents=[common], help="retention, data and storage per relation")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_show)

    p = r.add_parser(
        "set",
        parents=[common],
        help="change retention (durations like 30d, 12h, 5y, or forever)",
    )
    _set_options(p)
    p.add_argument("--yes", action="store_true", help="do not ask before shortening a retention")
    p.set_defaults(func=cmd_set)

    p = r.add_parser("apply", parents=[common], help="drop what is past retention now")
    p.add_argument("--dry-run", action="store_true", help="only print what would be dropped")
    p.add_argument(
        "--run",
        action="store_true",
        help="Community edition: run the retention and compression policies now "
        "instead of at their schedule",
    )
    p.add_argument("--yes", action="store_true", help="do not ask before dropping")
    p.set_defaults(func=cmd_apply)


def _set_options(p: argparse.ArgumentParser) -> None:
    """The durations ``set`` takes: one per retention option, and --compress-after."""
    # One option may set several relations (--hour: events_1h and the narrow hour ones).
    relations_of: dict[str, list[str]] = {}
    for rel, flag in FLAGS.items():
        relations_of.setdefault(flag, []).append(rel)
    for flag, rels in relations_of.items():
        # SUPPRESS: an option not given is absent, while `forever` parses to None.
        p.add_argument(
            flag,
            type=_duration,
            default=argparse.SUPPRESS,
            metavar="DURATION",
            help=f"keep {', '.join(rels)} this long",
        )
    p.add_argument(
        "--compress-after",
        type=_duration,
        default=argparse.SUPPRESS,
        metavar="DURATION",
        help="Community edition: compress raw events and rollups once older than this "
        "(off: stop compressing)",
    )


def _duration(text: str) -> int | None:
    try:
        return retention.parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


async def _connect(settings: Settings) -> tuple[asyncpg.Connection, Edition]:
    conn: asyncpg.Connection = await asyncpg.connect(await localdb.dsn_for(settings))
    mode = await migrate.rollup_mode(conn)
    if mode is None or not await db.fetchval(
        conn, "retention migrated", "SELECT to_regclass('retention') IS NOT NULL"
    ):
        await conn.close()
        raise OSError("the database is not migrated: run `apinalytics migrate` first")
    return conn, mode


def _confirm(question: str, yes: bool) -> int | None:
    """None to go ahead, or the exit code to stop with."""
    if yes:
        return None
    if not sys.stdin.isatty():
        print("apinalytics: this drops data; pass --yes when not at a terminal", file=sys.stderr)
        return USAGE
    if input(f"{question} [y/N] ").strip().lower() in ("y", "yes"):
        return None
    print("nothing changed")
    return DECLINED


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _when(t: datetime | float | None) -> str:
    if t is None:
        return "-"
    if isinstance(t, float):
        t = datetime.fromtimestamp(t, UTC)
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


async def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    conn, mode = await _connect(settings)
    try:
        rows = await retention.status(conn, mode)
        windows = await retention.refresh_windows(conn) if mode.continuous_aggregates else {}
        packed = (
            (await compression.policies(conn), await compression.stats(conn))
            if mode.compression
            else None
        )
    finally:
        await conn.close()
    if args.json:
        print(json.dumps(_show_json(mode, rows, windows, packed)))
        return OK
    how = (
        "continuous aggregates; TimescaleDB retention policies drop expired chunks"
        if mode.retention_policies
        else "tables kept by the ingest path; `apinalytics retention apply` drops expired chunks"
    )
    print(f"rollup mode: {mode} ({how})")
    header = (
        "relation",
        "retention",
        "complete from",
        "oldest data",
        "newest data",
        "chunks",
        "size",
    )
    table = [header]
    for s in rows:
        table.append(
            (
                s.relation,
                format_duration(s.keep_s),
                _when(s.horizon) if s.horizon is not None else "always",
                _when(s.oldest),
                _when(s.newest),
                str(s.chunks),
                _size(s.bytes),
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    print("times in UTC; 'complete from': queries read the relation from then on")
    if mode.retention_policies:
        _show_policies(rows, windows)
    _show_compression(packed)
    return OK


def _show_policies(rows: list[retention.RelationStatus], windows: dict[str, int | None]) -> None:
    """Community: each retention policy, a warning where one no longer matches the
    retention in force, and how far back each refresh policy reaches."""
    for s in rows:
        if s.policy:
            print(
                f"{s.relation}: retention policy job {s.policy.job_id}, drop_after "
                f"{format_duration(s.policy.after_s)}, every {_every(s.policy.schedule)}, "
                f"next run {_when(s.policy.next_start)}"
            )
        if (s.policy.after_s if s.policy else None) != s.keep_s:
            print(
                f"warning: {s.relation}'s retention policy does not match the retention "
                f"in force ({format_duration(s.keep_s)}); run `apinalytics retention set "
                f"{FLAGS[s.relation]} {format_duration(s.keep_s)}` to restore it",
                file=sys.stderr,
            )
    for rel, w in windows.items():
        print(f"{rel}: refresh policy reaches back {format_duration(w)}")


NO_COMPRESSION = (
    "compression: not available on the Apache edition (compressed chunks are a "
    "TimescaleDB Community feature)"
)


def _show_compression(
    packed: tuple[dict[str, retention.Job], dict[str, compression.Stats]] | None,
) -> None:
    if packed is None:
        print(NO_COMPRESSION)
        return
    policies, stats = packed
    ages = {p.after_s for p in policies.values()}
    if not policies:
        print("compression: off (`apinalytics retention set --compress-after 7d` turns it on)")
    elif len(ages) == 1:
        print(f"compression: chunks compressed once older than {format_duration(ages.pop())}")
    else:
        print("compression: per relation, below (set by hand; --compress-after sets one age)")
    for rel in RELATIONS:
        p, st = policies.get(rel), stats.get(rel)
        parts = []
        if p:
            parts.append(
                f"compression policy job {p.job_id}, compress after "
                f"{format_duration(p.after_s)}, every {_every(p.schedule)}, "
                f"next run {_when(p.next_start)}"
            )
        if st and st.compressed_chunks:
            parts.append(
                f"{st.compressed_chunks} of {st.chunks} chunks compressed, "
                f"{_size(st.before_bytes)} -> {_size(st.after_bytes)}"
            )
        if parts:
            print(f"{rel}: {'; '.join(parts)}")


def _every(interval: timedelta) -> str:
    return format_duration(int(interval.total_seconds()))


def _show_json(
    mode: str,
    rows: list[retention.RelationStatus],
    windows: dict[str, int | None],
    packed: tuple[dict[str, retention.Job], dict[str, compression.Stats]] | None,
) -> dict[str, Any]:
    def ts(t: datetime | None) -> float | None:
        return t.timestamp() if t else None

    policies, stats = packed if packed is not None else ({}, {})

    def compressed(rel: str) -> dict[str, Any]:
        p, st = policies.get(rel), stats.get(rel)
        return {
            "compress_after_s": p.after_s if p else None,
            "compression_job_id": p.job_id if p else None,
            "compressed_chunks": st.compressed_chunks if st else 0,
            "compressed_bytes_before": st.before_bytes if st else 0,
            "compressed_bytes_after": st.after_bytes if st else 0,
        }

    return {
        "mode": mode,
        "compression_available": packed is not None,
        "relations": {
            s.relation: {
                "retention_s": s.keep_s,
                "retention": format_duration(s.keep_s),
                "complete_from": s.horizon,
                "oldest": ts(s.oldest),
                "newest": ts(s.newest),
                "chunks": s.chunks,
                "bytes": s.bytes,
                "policy_job_id": s.policy.job_id if s.policy else None,
                "refresh_window_s": windows.get(s.relation),
                **compressed(s.relation),
            }
            for s in rows
        },
    }


async def cmd_set(args: argparse.Namespace, settings: Settings) -> int:
    changes: dict[str, int | None] = {
        rel: getattr(args, flag.lstrip("-"))
        for rel, flag in FLAGS.items()
        if hasattr(args, flag.lstrip("-"))
    }
    compress = hasattr(args, "compress_after")
    if not changes and not compress:
        options = ", ".join([*dict.fromkeys(FLAGS.values()), "--compress-after"])
        print(f"apinalytics: set needs at least one of {options}", file=sys.stderr)
        return USAGE
    conn, mode = await _connect(settings)
    try:
        if compress and not mode.compression:
            # Before anything else, so a refused command changes nothing at all.
            print(f"apinalytics: --compress-after: {NO_COMPRESSION_SET}", file=sys.stderr)
            return USAGE
        if changes:
            stop = await _set_retention(conn, mode, changes, args.yes)
            if stop is not None:
                return stop
        if compress:
            policies = await compression.set_compress_after(
                conn, args.compress_after, available=mode.compression
            )
    finally:
        await conn.close()
    if compress:
        if args.compress_after is None:
            print("compression: off; chunks compressed so far stay compressed")
        else:
            print(
                f"compression: {len(policies)} relations compressed once older than "
                f"{format_duration(args.compress_after)}; TimescaleDB runs the policies "
                "every 12 hours (`apinalytics retention apply --run` runs them now)"
            )
    return OK


NO_COMPRESSION_SET = (
    "compression needs the TimescaleDB Community edition; this database runs the "
    "Apache edition, which cannot compress chunks. Nothing changed."
)


async def _set_retention(
    conn: asyncpg.Connection, mode: Edition, changes: dict[str, int | None], yes: bool
) -> int | None:
    """The retention part of ``set``: None when done (and printed), else the exit code."""
    old = await retention.retention_in_force(conn)
    # Refusals first, so an unsafe setting says why before anyone is asked anything;
    # set_retention checks again under its lock.
    reasons = await retention.check(conn, {**old, **changes}, mode=mode)
    if reasons:
        return _refused(reasons)
    shorter = [rel for rel, keep in changes.items() if _shorter(keep, old[rel])]
    if shorter:
        stop = _confirm(
            f"Shorten the retention of {', '.join(shorter)}? Older data will be dropped.",
            yes,
        )
        if stop is not None:
            return stop
    try:
        new = await retention.set_retention(conn, changes, mode=mode)
    except retention.UnsafeRetention as exc:
        return _refused(exc.reasons)
    for rel in RELATIONS:
        print(f"{rel}: keep {format_duration(new[rel])}")
    if mode.retention_policies:
        print("retention policies updated; TimescaleDB runs them daily")
    else:
        print(
            "run `apinalytics retention apply --yes` (daily, e.g. from cron) to drop expired data"
        )
    return None


def _refused(reasons: list[str]) -> int:
    print("apinalytics: refused, nothing changed:", file=sys.stderr)
    for reason in reasons:
        print(f"  {reason}", file=sys.stderr)
    return REFUSED


def _shorter(new: int | None, old: int | None) -> bool:
    return new is not None and (old is None or new < old)


def _print_chunks(verb: str, found: Sequence[Chunk]) -> None:
    for c in found:
        print(
            f"{verb} {c.relation}  {_when(c.start)} .. {_when(c.end)}  {c.name}  {_size(c.bytes)}"
        )
    if found:
        total = sum(c.bytes for c in found)
        print(f"{verb} {len(found)} chunk(s), {_size(total)} in all")
    else:
        print("nothing past retention")


async def cmd_apply(args: argparse.Namespace, settings: Settings) -> int:
    conn, mode = await _connect(settings)
    try:
        now: datetime = await db.fetchval(conn, "now", "SELECT now()")
        if mode.retention_policies:
            return await _apply_community(conn, now, args)
        expired = await retention.expired_chunks(conn, now)
        if args.dry_run or not expired:
            _print_chunks("would drop", expired)
            return OK
        stop = _confirm(f"Drop {len(expired)} chunk(s) past retention?", args.yes)
        if stop is not None:
            return stop
        _print_chunks("dropped", await retention.drop_expired(conn, now))
        return OK
    finally:
        await conn.close()


async def _apply_community(
    conn: asyncpg.Connection, now: datetime, args: argparse.Namespace
) -> int:
    jobs = await retention.retention_jobs(conn)
    print(
        "Community edition: TimescaleDB retention policies drop expired chunks on their "
        "schedule" + ("" if args.run else "; pass --run to run them now")
    )
    for job in jobs.values():
        print(f"  {job.relation}: job {job.job_id}, next run {_when(job.next_start)}")
    expired = await retention.expired_chunks(conn, now)
    if args.dry_run or not args.run or not expired:
        _print_chunks("would drop", expired)
    else:
        stop = _confirm(
            f"Run the retention policies now, dropping {len(expired)} chunk(s)?", args.yes
        )
        if stop is not None:
            return stop
        _print_chunks("dropped", await retention.run_policies(conn))
    # Compression after the drops: nothing is compressed only to be dropped.
    if not await compression.policies(conn):
        return OK
    pending = await compression.pending_chunks(conn, now)
    if args.dry_run or not args.run:
        _print_compressed("would compress", pending)
    else:
        _print_compressed("compressed", await compression.run_policies(conn))
    return OK


def _print_compressed(verb: str, found: Sequence[Chunk]) -> None:
    for c in found:
        print(
            f"{verb} {c.relation}  {_when(c.start)} .. {_when(c.end)}  {c.name}"
            + (f"  {_size(c.bytes)}" if c.compressed else "")
        )
    print(f"{verb} {len(found)} chunk(s)" if found else "nothing to compress")
