-- 0005 (Community edition): three narrower hour rollups, events_1h_app (per app),
-- events_1h_function (per app and function) and events_1h_consumer (per app and
-- consumer_id), as continuous aggregates on events_1h, with real-time aggregation on.
--
-- Why: events_1h keys each hour by consumer × method × function × status code, so on
-- the benchmark data (docs/benchmarks.md, 10M events) it still holds 0.24 rows per
-- raw event (2,423,190 materialized rows) and the 7- and 30-day panels read 109,442
-- and 472,124 of them (250-800 ms per request). The same hours per app, per function
-- and per consumer are 7,210, 199,358 and 345,938 rows, and the panels' SQL on them
-- takes 2-50 ms (bench/narrow_rollups.py). The planner picks, among hour rollups that
-- cover a query's group and filter fields, the one with the fewest dimensions.
--
-- Reversible: yes, by dropping the three views (and their policies go with them) and
-- deleting their rows from `retention`, after the declarations in
-- apinalytics/rollups.py are removed; they hold nothing events_1h does not.
--
-- Shape: as events_1h, with only the rollup's own dimensions; re-aggregating
-- events_1h's hours (the same bucket width) is exact: sums of sums, min of mins, max
-- of maxes, sums cast to bigint to match the Apache tables. materialized_only = false
-- as in 0002: what is above an aggregate's watermark is aggregated from events_1h at
-- query time (and events_1h's own real-time part from events_1m), so nothing is
-- missing before the first refresh, only slower. The ingest path refreshes the
-- buckets of back-dated events after events_1h's (service/apinalytics/ingest/rollups.py).
--
-- WITH NO DATA: a refresh cannot run in the migration's transaction. Existing data
-- is materialized by the refresh policies below (the last 7 days) and, for older
-- ranges, by `apinalytics.ingest.rollups.rebuild` over the range events_1h covers;
-- until then real-time aggregation answers from events_1h.
--
-- create_group_indexes = false, then one index (app_id, bucket), as in 0002: every
-- read is "one app, a bucket range". Chunks of the materialization: 90 days, as
-- events_1h: `apinalytics retention set --hour` sets their retention together with
-- events_1h's and whole chunks are what retention drops; they are far smaller than
-- events_1h, so this is a few small chunks a year.
--
-- Refresh policies, each every 30 minutes over [now - 7 days, now - 2 hours):
--   end_offset 2 hours: they are materialized from events_1h's materialized rows, and
--   an hour is only there once events_1h's policy (end_offset 1 hour, every 30
--   minutes) has passed it, so their threshold stays behind events_1h's.
--   start_offset 7 days: covers events_1h's 3-day window (whose refreshes invalidate
--   these) plus slack for a stopped scheduler; events_1h's retention must stay longer
--   than that plus one bucket (`apinalytics retention set` refuses less), or a refresh
--   would read dropped events_1h chunks and delete rows here.
--
-- Retention starts as events_1h's (keep, how far it was already dropped, and a
-- retention policy if events_1h has one).

CREATE MATERIALIZED VIEW events_1h_app
WITH (
    timescaledb.continuous,
    timescaledb.materialized_only = false,
    timescaledb.create_group_indexes = false
) AS
SELECT
    time_bucket(INTERVAL '1 hour', bucket) AS bucket,
    app_id,
    sum(calls)::bigint AS calls,
    sum(sum_us)::bigint AS sum_us,
    min(min_us) AS min_us,
    max(max_us) AS max_us
FROM events_1h
GROUP BY time_bucket(INTERVAL '1 hour', bucket), app_id
WITH NO DATA;

SELECT set_chunk_time_interval('events_1h_app', INTERVAL '90 days');
CREATE INDEX events_1h_app_app_bucket ON events_1h_app (app_id, bucket);

CREATE MATERIALIZED VIEW events_1h_function
WITH (
    timescaledb.continuous,
    timescaledb.materialized_only = false,
    timescaledb.create_group_indexes = false
) AS
SELECT
    time_bucket(INTERVAL '1 hour', bucket) AS bucket,
    app_id,
    function,
    sum(calls)::bigint AS calls,
    sum(sum_us)::bigint AS sum_us,
    min(min_us) AS min_us,
    max(max_us) AS max_us
FROM events_1h
GROUP BY time_bucket(INTERVAL '1 hour', bucket), app_id, function
WITH NO DATA;

SELECT set_chunk_time_interval('events_1h_function', INTERVAL '90 days');
CREATE INDEX events_1h_function_app_bucket ON events_1h_function (app_id, bucket);

CREATE MATERIALIZED VIEW events_1h_consumer
WITH (
    timescaledb.continuous,
    timescaledb.materialized_only = false,
    timescaledb.create_group_indexes = false
) AS
SELECT
    time_bucket(INTERVAL '1 hour', bucket) AS bucket,
    app_id,
    consumer_id,
    sum(calls)::bigint AS calls,
    sum(sum_us)::bigint AS sum_us,
    min(min_us) AS min_us,
    max(max_us) AS max_us
FROM events_1h
GROUP BY time_bucket(INTERVAL '1 hour', bucket), app_id, consumer_id
WITH NO DATA;

SELECT set_chunk_time_interval('events_1h_consumer', INTERVAL '90 days');
CREATE INDEX events_1h_consumer_app_bucket ON events_1h_consumer (app_id, bucket);

SELECT add_continuous_aggregate_policy(
    v,
    start_offset => INTERVAL '7 days',
    end_offset => INTERVAL '2 hours',
    schedule_interval => INTERVAL '30 minutes'
)
FROM unnest(ARRAY['events_1h_app', 'events_1h_function', 'events_1h_consumer']::regclass[]) AS v;

ALTER TABLE retention DROP CONSTRAINT retention_relation_check;
ALTER TABLE retention ADD CONSTRAINT retention_relation_check CHECK (relation IN (
    'events', 'events_1m', 'events_1h',
    'events_1h_app', 'events_1h_function', 'events_1h_consumer'));

INSERT INTO retention (relation, keep_s, dropped_before)
SELECT n.relation, r.keep_s, r.dropped_before
FROM retention r,
     unnest(ARRAY['events_1h_app', 'events_1h_function', 'events_1h_consumer']) AS n(relation)
WHERE r.relation = 'events_1h';

SELECT add_retention_policy(n.relation::regclass, drop_after => make_interval(secs => r.keep_s))
FROM retention r,
     unnest(ARRAY['events_1h_app', 'events_1h_function', 'events_1h_consumer']) AS n(relation)
WHERE r.relation = 'events_1h' AND r.keep_s IS NOT NULL;
