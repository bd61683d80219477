-- 0002 (Community edition): the rollups events_1m and events_1h as continuous
-- aggregates, the hour one built on the minute one, with real-time aggregation on.
--
-- Reversible: yes, by dropping both views (events_1h first); they are recomputed
-- from the raw events by re-running this migration's statements and
-- `apinalytics.ingest.rollups.rebuild` for the range the raw events still cover.
--
-- Shape (identical to the Apache edition's tables, so the query planner reads either
-- without knowing which): per bucket, app and combination of consumer_id, method,
-- function and status_code, what re-aggregates exactly: calls (count), sum_us,
-- min_us, max_us of response_us. Sums are cast to bigint (sum(bigint) is numeric) so
-- the column types match the Apache tables. url and data are not rolled up: a URL
-- with its query string is nearly unique per call, so such a rollup would be as big
-- as the raw table; queries on them read raw events. time_bucket of one minute and
-- one hour is aligned to the UNIX epoch, as SPEC requires of query buckets.
--
-- materialized_only = false: real-time aggregation (off by default in TimescaleDB
-- 2.13 and later). A query reads the materialized buckets below the aggregate's
-- watermark and aggregates the rest on the fly (events_1m from events, events_1h
-- from events_1m), so events newer than the last refresh are visible at once.
-- Events below an aggregate's invalidation threshold (back-dated, or later than the
-- end_offset below) are made visible by the ingest path, which refreshes exactly
-- their buckets after COMMIT (service/apinalytics/ingest/rollups.py).
--
-- create_group_indexes = false, then one index (app_id, bucket): every read is "one
-- app, a bucket range"; the default one-index-per-grouping-column would only slow
-- refreshes. Chunks of the materialization: 7 days (minute) and 90 days (hour), as in
-- the Apache edition and for the same reasons (see 0002_rollups.apache.sql).
--
-- Refresh policies. A refresh cannot run inside a transaction, but adding a policy
-- can, so this migration runs in one transaction like every other. The windows:
--   events_1m: every 5 minutes, [now - 1 day, now - 15 minutes).
--     end_offset 15 minutes: the last quarter hour is served by real-time aggregation
--     from raw events (one app's quarter hour is a short index range scan), and
--     clients that send their events in batches a few minutes late still land above
--     the watermark, so their batches need no refresh on the ingest path.
--     start_offset 1 day: the policy only has to reach back to where its previous run
--     stopped (15 + 5 minutes); the rest is slack for a scheduler that was stopped or
--     starved. Back-dated events are refreshed by the ingest path, not by the policy,
--     so a wider window would buy nothing, and a refresh must never reach below the
--     raw events' retention horizon (a refresh over a dropped range deletes rollup
--     rows): raw retention must stay longer than one day.
--   events_1h: every 30 minutes, [now - 3 days, now - 1 hour).
--     It is materialized from events_1m's materialized rows, so an hour is only
--     complete once the minute policy has passed its end: end_offset 1 hour keeps the
--     hour watermark behind the minute one (now - 15 minutes - up to 5 minutes of
--     schedule). start_offset 3 days covers the minute policy's 1-day window plus the
--     same kind of slack; events_1m's retention must stay longer than that.
--   Both windows span well over the two buckets a policy window needs.

CREATE MATERIALIZED VIEW events_1m
WITH (
    timescaledb.continuous,
    timescaledb.materialized_only = false,
    timescaledb.create_group_indexes = false
) AS
SELECT
    time_bucket(INTERVAL '1 minute', time) AS bucket,
    app_id,
    consumer_id,
    method,
    function,
    status_code,
    count(*) AS calls,
    sum(response_us)::bigint AS sum_us,
    min(response_us) AS min_us,
    max(response_us) AS max_us
FROM events
GROUP BY time_bucket(INTERVAL '1 minute', time), app_id, consumer_id, method, function, status_code
WITH NO DATA;

SELECT set_chunk_time_interval('events_1m', INTERVAL '7 days');
CREATE INDEX events_1m_app_bucket ON events_1m (app_id, bucket);

CREATE MATERIALIZED VIEW events_1h
WITH (
    timescaledb.continuous,
    timescaledb.materialized_only = false,
    timescaledb.create_group_indexes = false
) AS
SELECT
    time_bucket(INTERVAL '1 hour', bucket) AS bucket,
    app_id,
    consumer_id,
    method,
    function,
    status_code,
    sum(calls)::bigint AS calls,
    sum(sum_us)::bigint AS sum_us,
    min(min_us) AS min_us,
    max(max_us) AS max_us
FROM events_1m
GROUP BY time_bucket(INTERVAL '1 hour', bucket), app_id, consumer_id, method, function, status_code
WITH NO DATA;

SELECT set_chunk_time_interval('events_1h', INTERVAL '90 days');
CREATE INDEX events_1h_app_bucket ON events_1h (app_id, bucket);

SELECT add_continuous_aggregate_policy(
    'events_1m',
    start_offset => INTERVAL '1 day',
    end_offset => INTERVAL '15 minutes',
    schedule_interval => INTERVAL '5 minutes'
);

SELECT add_continuous_aggregate_policy(
    'events_1h',
    start_offset => INTERVAL '3 days',
    end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '30 minutes'
);
