-- 0007 (Community edition): events_1m_app, the minute rollup per app alone, as a
-- continuous aggregate on events_1m with real-time aggregation on.
--
-- Why: events_1m keys each minute by consumer × method × function × status code, so
-- on the benchmark data (docs/benchmarks.md, 10M events) it holds 0.81 rows per raw
-- event: an ungrouped, unfiltered minute panel over the last hour of the busiest app
-- reads about 5,000 of its rows, no fewer than the raw events. Per app alone the same
-- hour is 60 rows. The same goes for the ragged minute edges of ungrouped hourly and
-- daily answers, which the planner reads from the narrowest minute rollup that covers
-- the query, as it does for hours.
--
-- Reversible: yes, by dropping the view (its policies go with it) and deleting its row
-- from `retention`, after its declaration in apinalytics/rollups.py is removed; it
-- holds nothing events_1m does not.
--
-- Shape: as events_1m without dimensions; re-aggregating events_1m's minutes (the
-- same bucket width) is exact: sums of sums, min of mins, max of maxes, sums cast to
-- bigint to match the Apache table. materialized_only = false as in 0002: what is
-- above its watermark is aggregated from events_1m at query time (and events_1m's own
-- real-time part from raw events). The ingest path refreshes the buckets of
-- back-dated events after events_1m's (service/apinalytics/ingest/rollups.py).
--
-- WITH NO DATA: a refresh cannot run in the migration's transaction. Existing data is
-- materialized by the refresh policy below (the last 2 days) and, for older ranges,
-- by `apinalytics.ingest.rollups.rebuild`; until then real-time aggregation answers
-- from events_1m.
--
-- create_group_indexes = false, then one covering index (app_id, bucket) INCLUDE the
-- measures, as the narrow hour rollups since 0006: every read is "one app, a bucket
-- range", served index-only. Chunks of the materialization: 7 days, as events_1m:
-- `apinalytics retention set --minute` sets both, and whole chunks are what
-- retention drops.
--
-- Refresh policy: every 5 minutes over [now - 2 days, now - 30 minutes).
--   end_offset 30 minutes: it is materialized from events_1m's materialized rows, and
--   a minute is only there once events_1m's policy (end_offset 15 minutes, every 5
--   minutes) has passed it, so its threshold stays behind events_1m's.
--   start_offset 2 days: covers events_1m's 1-day window (whose refreshes invalidate
--   this one) plus slack for a stopped scheduler. events_1m must be kept longer than
--   that plus one bucket (`apinalytics retention set` refuses less); events_1h's
--   3-day window already asks more of it.
--
-- Retention starts as events_1m's (keep, how far it was already dropped, and a
-- retention policy if events_1m has one).

CREATE MATERIALIZED VIEW events_1m_app
WITH (
    timescaledb.continuous,
    timescaledb.materialized_only = false,
    timescaledb.create_group_indexes = false
) AS
SELECT
    time_bucket(INTERVAL '1 minute', bucket) AS bucket,
    app_id,
    sum(calls)::bigint AS calls,
    sum(sum_us)::bigint AS sum_us,
    min(min_us) AS min_us,
    max(max_us) AS max_us
FROM events_1m
GROUP BY time_bucket(INTERVAL '1 minute', bucket), app_id
WITH NO DATA;

SELECT set_chunk_time_interval('events_1m_app', INTERVAL '7 days');
CREATE INDEX events_1m_app_covering
    ON events_1m_app (app_id, bucket) INCLUDE (calls, sum_us, min_us, max_us);

SELECT add_continuous_aggregate_policy(
    'events_1m_app',
    start_offset => INTERVAL '2 days',
    end_offset => INTERVAL '30 minutes',
    schedule_interval => INTERVAL '5 minutes'
);

ALTER TABLE retention DROP CONSTRAINT retention_relation_check;
ALTER TABLE retention ADD CONSTRAINT retention_relation_check CHECK (relation IN (
    'events', 'events_1m', 'events_1h',
    'events_1h_app', 'events_1h_function', 'events_1h_consumer', 'events_1m_app'));

INSERT INTO retention (relation, keep_s, dropped_before)
SELECT 'events_1m_app', keep_s, dropped_before FROM retention WHERE relation = 'events_1m';

SELECT add_retention_policy('events_1m_app', drop_after => make_interval(secs => keep_s))
FROM retention
WHERE relation = 'events_1m' AND keep_s IS NOT NULL;
