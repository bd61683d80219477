"""What narrower hourly rollups would buy the dashboard panels (an experiment, not a feature).

On the Apache-mode data of ``bench/generate.py``, builds scratch tables aggregated
from ``events_1h`` per (app, hour) alone, per (app, hour, function) and per (app,
hour, consumer_id), and times the SQL of three panels on each against the same SQL
on ``events_1h`` (which keys every hour by all four dimensions). Direct SQL over one
connection, no HTTP; the scratch tables are dropped at the end.

    .venv/bin/python bench/narrow_rollups.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import asyncpg

from common import cluster, median
from generate import manifest_path

DAY = 86400

# name -> (dimension kept, SQL over a relation with that shape; $1 app, $2/$3 range)
PANELS = {
    "hourly count by function, 7 days": (
        "function",
        7 * DAY,
        "SELECT bucket, function, sum(calls) FROM {rel} WHERE app_id = $1 AND bucket >= $2 "
        "AND bucket < $3 GROUP BY 1, 2",
    ),
    "hourly mean by consumer, 7 days": (
        "consumer_id",
        7 * DAY,
        "SELECT bucket, consumer_id, sum(sum_us)::float8 / sum(calls) FROM {rel} "
        "WHERE app_id = $1 AND bucket >= $2 AND bucket < $3 GROUP BY 1, 2",
    ),
    "daily count, 30 days": (
        None,
        30 * DAY,
        "SELECT time_bucket('1 day', bucket), sum(calls) FROM {rel} WHERE app_id = $1 "
        "AND bucket >= $2 AND bucket < $3 GROUP BY 1",
    ),
}


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args()
    data = json.loads(manifest_path("apache").read_text())
    c = await asyncio.to_thread(cluster, "query-apache", "apache", fresh=False)
    conn = await asyncpg.connect(c.dsn)
    app = max(data["app_list"], key=lambda a: a["events"])["id"]
    try:
        for dim in (None, "function", "consumer_id"):
            name = f"scratch_1h_{dim or 'app'}"
            cols = ", ".join(["app_id", "bucket", *([dim] if dim else [])])
            await conn.execute(f"DROP TABLE IF EXISTS {name}")
            await conn.execute(
                f"CREATE TABLE {name} AS SELECT {cols}, sum(calls)::bigint AS calls, "
                f"sum(sum_us)::bigint AS sum_us FROM events_1h GROUP BY {cols}"
            )
            await conn.execute(f"ALTER TABLE {name} ADD PRIMARY KEY ({cols})")
            await conn.execute(f"ANALYZE {name}")
            rows = await conn.fetchval(f"SELECT count(*) FROM {name}")
            size = await conn.fetchval(f"SELECT pg_total_relation_size('{name}')")
            print(f"{name}: {rows:,} rows, {size / 2**20:.1f} MiB")
        end = data["end"]
        print("| panel | events_1h p50 | narrow p50 | rows read (events_1h / narrow) |")
        print("|---|---:|---:|---|")
        for panel, (dim, range_s, sql) in PANELS.items():
            narrow = f"scratch_1h_{dim or 'app'}"
            start_ts = await conn.fetchval("SELECT to_timestamp($1)", end - range_s)
            end_ts = await conn.fetchval("SELECT to_timestamp($1)", end)
            times: dict[str, list[float]] = {"events_1h": [], narrow: []}
            counts = {}
            for rel in times:
                counts[rel] = await conn.fetchval(
                    f"SELECT count(*) FROM {rel} WHERE app_id = $1 AND bucket >= $2 AND bucket < $3",
                    app,
                    start_ts,
                    end_ts,
                )
            for _ in range(args.repeats):
                for rel in times:
                    t = time.perf_counter()
                    await conn.fetch(sql.format(rel=rel), app, start_ts, end_ts)
                    times[rel].append(time.perf_counter() - t)
            print(
                f"| {panel} | {median(times['events_1h']) * 1000:.1f} ms | "
                f"{median(times[narrow]) * 1000:.1f} ms | "
                f"{counts['events_1h']:,} / {counts[narrow]:,} |"
            )
    finally:
        for dim in ("app", "function", "consumer_id"):
            await conn.execute(f"DROP TABLE IF EXISTS scratch_1h_{dim}")
        await conn.close()
        await asyncio.to_thread(c.stop)


if __name__ == "__main__":
    asyncio.run(main())
