"""Whether the Apache mode's rollup upserts would be cheaper into a plain table than
into a hypertable (an experiment, not a feature).

Two tables of ``events_1m``'s shape and primary key, one a hypertable (7-day chunks,
as migration 0002 makes it) and one a plain table, side by side on one connection of
a fresh Apache-mode cluster. Each round upserts the same batch of rollup rows into
both, in alternating order: 344 distinct keys per batch, as the ingest benchmark's
batches of 1,000 events carry, drawn from 2,000 (consumer, method, function, status)
keys, three batches per minute bucket, so most rows update a stored one as in a live
stream. The statement is the upkeep's ``INSERT … SELECT FROM unnest(…) ON CONFLICT
DO UPDATE``.

    .venv/bin/python bench/upsert_target.py [--rounds 300]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import time

import asyncpg

from common import cluster, median

KEYS_PER_BATCH = 344
DDL = """
CREATE TABLE {t} (
    bucket timestamptz NOT NULL, app_id integer NOT NULL, consumer_id text NOT NULL,
    method text NOT NULL, function text NOT NULL, status_code smallint NOT NULL,
    calls bigint NOT NULL, sum_us bigint NOT NULL, min_us bigint NOT NULL,
    max_us bigint NOT NULL,
    PRIMARY KEY (app_id, bucket, consumer_id, method, function, status_code)
)
"""
UPSERT = """
INSERT INTO {t}
SELECT * FROM unnest($1::timestamptz[], $2::int[], $3::text[], $4::text[], $5::text[],
                     $6::smallint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[])
ON CONFLICT (app_id, bucket, consumer_id, method, function, status_code) DO UPDATE SET
    calls = {t}.calls + excluded.calls, sum_us = {t}.sum_us + excluded.sum_us,
    min_us = least({t}.min_us, excluded.min_us), max_us = greatest({t}.max_us, excluded.max_us)
"""


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=300)
    args = p.parse_args()
    c = await asyncio.to_thread(cluster, "upsert-target", "apache", fresh=True)
    conn = await asyncpg.connect(c.dsn)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        for t in ("hypertable", "plain"):
            await conn.execute(DDL.format(t=t))
        await conn.execute(
            "SELECT create_hypertable('hypertable', by_range('bucket', INTERVAL '7 days'), "
            "create_default_indexes => false)"
        )
        rng = random.Random(1)
        keys = sorted(
            {
                (
                    f"c{rng.randrange(50)}",
                    rng.choice(["GET", "POST", "PUT"]),
                    f"f{rng.randrange(30)}",
                    rng.choice([200, 201, 204, 404, 500]),
                )
                for _ in range(2000)
            }
        )
        base = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
        took: dict[str, list[float]] = {"hypertable": [], "plain": []}
        for i in range(args.rounds):
            bucket = base + dt.timedelta(minutes=i // 3)
            batch = sorted(rng.sample(keys, KEYS_PER_BATCH))
            n = len(batch)
            columns = [
                [bucket] * n,
                [1] * n,
                *([k[j] for k in batch] for j in range(4)),
                [3] * n,
                [300] * n,
                [50] * n,
                [150] * n,
            ]
            order = ("hypertable", "plain") if i % 2 else ("plain", "hypertable")
            for t in order:
                t0 = time.perf_counter()
                await conn.execute(UPSERT.format(t=t), *columns)
                took[t].append(time.perf_counter() - t0)
        warm = args.rounds // 10
        ms = {t: median(v[warm:]) * 1000 for t, v in took.items()}
        print(f"{KEYS_PER_BATCH} rows per upsert, {args.rounds - warm} rounds after warm-up")
        for t, m in ms.items():
            print(f"  {t:10}  median {m:.2f} ms, {m * 1000 / KEYS_PER_BATCH:.1f} µs per row")
        print(f"  plain ÷ hypertable: {ms['plain'] / ms['hypertable']:.2f}")
    finally:
        await conn.close()
        c.stop()


if __name__ == "__main__":
    asyncio.run(main())
