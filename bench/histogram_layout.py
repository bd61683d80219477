"""How to store the latency histogram: a bin per row, or arrays per row (an experiment).

On the Apache-mode data of ``bench/generate.py``, compares two layouts of the hour
histogram per app and function (``events_1h_function_hist``):

- rows: one row per (app, hour, function, bin) with its count, as migration 0009
  stores it (a continuous aggregate can group by the bin's immutable expression);
- arrays: one row per (app, hour, function) with the occupied bins and their counts
  as two arrays (``smallint[]``, ``bigint[]``), which a continuous aggregate could
  only build with a custom aggregate, and whose merge across rows needs one too.

Sizes (total relation size with the primary key), and the SQL of an hourly p95 by
function over 7 days for the busiest app on each (same ranking SQL, the arrays
unnested first). Also counted: the rows a per-app minute histogram would hold. Direct
SQL over one connection, no HTTP; the scratch tables are dropped at the end.

    .venv/bin/python bench/histogram_layout.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import asyncpg

from apinalytics.measures import HISTOGRAM
from common import cluster, median
from generate import manifest_path

DAY = 86400

SOURCES = {
    "rows": "SELECT app_id, bucket, function, bin, calls FROM scratch_hist_rows",
    "arrays": (
        "SELECT app_id, bucket, function, u.bin, u.calls "
        "FROM scratch_hist_arrays, unnest(bins, counts) AS u(bin, calls)"
    ),
}

P95 = f"""
SELECT bucket, function,
       min(rep) FILTER (WHERE upto > k)
       + (coalesce(min(rep) FILTER (WHERE upto > k + 1), min(rep) FILTER (WHERE upto > k))
          - min(rep) FILTER (WHERE upto > k)) * max(h - k)
FROM (
  SELECT bucket, function, upto, {HISTOGRAM.representative("bin")} AS rep,
         0.95 * (total - 1) AS h, floor(0.95 * (total - 1)) AS k
  FROM (
    SELECT bucket, function, bin,
           sum(calls) OVER (PARTITION BY bucket, function ORDER BY bin) AS upto,
           (sum(calls) OVER (PARTITION BY bucket, function))::float8 AS total
    FROM ({{source}} WHERE app_id = $1 AND bucket >= $2 AND bucket < $3) s
  ) ranked
) binned GROUP BY bucket, function
"""


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args()
    data = json.loads(manifest_path("apache").read_text())
    c = await asyncio.to_thread(cluster, "query-apache", "apache", fresh=False)
    conn = await asyncpg.connect(c.dsn)
    app = max(data["app_list"], key=lambda a: a["events"])["id"]
    try:
        events = await conn.fetchval("SELECT count(*) FROM events")
        await conn.execute("DROP TABLE IF EXISTS scratch_hist_rows, scratch_hist_arrays")
        await conn.execute(
            "CREATE TABLE scratch_hist_rows AS SELECT * FROM events_1h_function_hist"
        )
        await conn.execute(
            "ALTER TABLE scratch_hist_rows ADD PRIMARY KEY (app_id, bucket, function, bin)"
        )
        await conn.execute(
            """
            CREATE TABLE scratch_hist_arrays AS
            SELECT app_id, bucket, function, array_agg(bin ORDER BY bin) AS bins,
                   array_agg(calls ORDER BY bin) AS counts
            FROM events_1h_function_hist GROUP BY app_id, bucket, function
            """
        )
        await conn.execute(
            "ALTER TABLE scratch_hist_arrays ADD PRIMARY KEY (app_id, bucket, function)"
        )
        await conn.execute("VACUUM ANALYZE scratch_hist_rows, scratch_hist_arrays")
        print(f"{events:,} events")
        print(
            "| layout | rows | total size | bytes per event | p95 hourly by function, 7 days (p50) |"
        )
        print("|---|---:|---:|---:|---:|")
        end = data["end"]
        start_ts = await conn.fetchval("SELECT to_timestamp($1)", end - 7 * DAY)
        end_ts = await conn.fetchval("SELECT to_timestamp($1)", end)
        answers = {}
        for layout, source in SOURCES.items():
            table = f"scratch_hist_{layout}"
            rows = await conn.fetchval(f"SELECT count(*) FROM {table}")
            size = await conn.fetchval(f"SELECT pg_total_relation_size('{table}')")
            sql = P95.format(source=source)
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                answers[layout] = sorted(
                    tuple(r) for r in await conn.fetch(sql, app, start_ts, end_ts)
                )
                times.append(time.perf_counter() - t)
            print(
                f"| {layout} | {rows:,} | {size / 2**20:.1f} MiB | {size / events:.1f} | "
                f"{median(times) * 1000:.1f} ms |"
            )
        assert answers["rows"] == answers["arrays"], "the two layouts answer alike"
        minute_rows = await conn.fetchval(
            f"""
            SELECT count(*) FROM (
                SELECT DISTINCT app_id, time_bucket(INTERVAL '1 minute', time),
                       {HISTOGRAM.bin_of("response_us")}
                FROM events
            ) m
            """
        )
        hour_app_rows = await conn.fetchval("SELECT count(*) FROM events_1h_app_hist")
        print(
            f"\nA per-app minute histogram would hold {minute_rows:,} rows "
            f"({minute_rows / events:.3f} per event); events_1h_app_hist holds "
            f"{hour_app_rows:,} ({hour_app_rows / events:.4f} per event)."
        )
    finally:
        await conn.execute("DROP TABLE IF EXISTS scratch_hist_rows, scratch_hist_arrays")
        await conn.close()
        await asyncio.to_thread(c.stop)


if __name__ == "__main__":
    asyncio.run(main())
