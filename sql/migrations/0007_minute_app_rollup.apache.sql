-- 0007 (Apache edition): events_1m_app, the minute rollup per app alone, kept up to
-- date by the ingest path like events_1m.
--
-- Why: events_1m keys each minute by consumer × method × function × status code, so
-- on the benchmark data (docs/benchmarks.md, 10M events) it holds 0.81 rows per raw
-- event: an ungrouped, unfiltered minute panel over the last hour of the busiest app
-- reads about 5,000 of its rows (8 ms), no fewer than the raw events. Per app alone
-- the same hour is 60 rows. The same goes for the ragged minute edges of ungrouped
-- hourly and daily answers, which the planner reads from the narrowest minute rollup
-- that covers the query, as it does for hours.
--
-- Reversible: yes, by dropping the table and deleting its row from `retention`, after
-- its declaration in apinalytics/rollups.py is removed; it holds nothing events_1m
-- does not.
--
-- Shape: as events_1m without dimensions. Primary key (app_id, bucket) INCLUDE the
-- measures, as the narrow hour rollups since 0006: the upsert's conflict target and
-- lock order, and the index that reads serve index-only. One row per app-minute: every
-- batch of an app upserts the same current row, as it already does in events_1h_app,
-- so concurrent transactions of one app take its lock in turn. The rollup is
-- declared last, so that lock is taken by the last upsert of the transaction and held
-- only until its commit.
--
-- Chunks: 7 days, as events_1m: `apinalytics retention set --minute` sets both, and
-- whole chunks are what retention drops, so the same interval drops them alike. At
-- 1,440 rows per app and day these are small chunks.
--
-- Existing data: filled from events_1m in this transaction (a scan of events_1m, far
-- cheaper than re-reading raw events). Batches written while this migration runs by
-- a service that predates it do not reach this table: migrate with ingest stopped,
-- or rebuild the rollups over that stretch afterwards. Its retention starts as
-- events_1m's (keep and how far it was already dropped).

CREATE TABLE events_1m_app (
    bucket      timestamptz NOT NULL,
    app_id      integer     NOT NULL,
    calls       bigint      NOT NULL,
    sum_us      bigint      NOT NULL,
    min_us      bigint      NOT NULL,
    max_us      bigint      NOT NULL,
    PRIMARY KEY (app_id, bucket) INCLUDE (calls, sum_us, min_us, max_us)
);

SELECT create_hypertable(
    'events_1m_app',
    by_range('bucket', INTERVAL '7 days'),
    create_default_indexes => false
);

INSERT INTO events_1m_app (bucket, app_id, calls, sum_us, min_us, max_us)
SELECT bucket, app_id, sum(calls)::bigint, sum(sum_us)::bigint, min(min_us), max(max_us)
FROM events_1m
GROUP BY bucket, app_id;

ALTER TABLE retention DROP CONSTRAINT retention_relation_check;
ALTER TABLE retention ADD CONSTRAINT retention_relation_check CHECK (relation IN (
    'events', 'events_1m', 'events_1h',
    'events_1h_app', 'events_1h_function', 'events_1h_consumer', 'events_1m_app'));

INSERT INTO retention (relation, keep_s, dropped_before)
SELECT 'events_1m_app', keep_s, dropped_before FROM retention WHERE relation = 'events_1m';
