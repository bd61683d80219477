-- 0009 (Community edition): latency histograms, events_1h_function_hist (per app,
-- function and hour, on raw events) and events_1h_app_hist (per app and hour, on
-- events_1h_function_hist), as continuous aggregates with real-time aggregation on.
-- (0008 is left to another change.)
--
-- Why: a percentile needs every value, and the other rollups hold count, sum, min and
-- max only: every percentile read raw events, and past raw retention it was a 410.
-- Counts of response_us in logarithmic bins merge exactly across rows (sums), and a
-- percentile read from them is within 1 % of the exact one (docs/querying.md,
-- "Approximate answers"); precision=approximate reads them.
--
-- Shape: one row per bucket, app, (function,) and bin with the count of its events,
-- `calls`. The bin is an immutable expression of response_us, so a continuous
-- aggregate can group by it (apinalytics/measures.py, HISTOGRAM.bin_of):
--   0 for 0 µs, else floor(ln(response_us) / ln(1.02)) + 1,
-- so bin i >= 1 holds [1.02^(i-1), 1.02^i); 86,400,000,000 µs is bin 1,272. Counts
-- cast to bigint as the Apache tables. The same shape as the Apache edition's tables.
--
-- New aggregates rather than a column of the existing ones: those cannot gain a
-- column without being recreated, which would lose their rows past raw retention.
--
-- WITH NO DATA: a refresh cannot run in the migration's transaction. Existing data is
-- materialized by the refresh policies below and, for older ranges, by
-- `apinalytics rollups rebuild`; until then real-time aggregation answers from the
-- source. What raw events no longer hold is recorded as dropped (`dropped_before`),
-- so the planner never reads a histogram where it is incomplete.
--
-- create_group_indexes = false, then one covering index (app_id, bucket) INCLUDE the
-- other columns, as the narrow rollups: every read is "one app, a bucket range".
-- Chunks of the materialization: 90 days, as events_1h (`retention set --hour`).
--
-- Refresh policies:
--   events_1h_function_hist, from raw events: every 30 minutes over [now - 1 day,
--   now - 1 hour); raw events must be kept longer than a day and an hour
--   (`apinalytics retention set` refuses less), as events_1m's policy asks already.
--   events_1h_app_hist, from events_1h_function_hist: every 30 minutes over
--   [now - 7 days, now - 2 hours), behind its source's threshold as the narrow hour
--   rollups are behind events_1h's.
--
-- Reversible: yes, by dropping both views (their policies go with them) and deleting
-- their rows from `retention`, after their declarations in
-- apinalytics/rollups/declared.py are removed.

CREATE MATERIALIZED VIEW events_1h_function_hist
WITH (
    timescaledb.continuous,
    timescaledb.materialized_only = false,
    timescaledb.create_group_indexes = false
) AS
SELECT
    time_bucket(INTERVAL '1 hour', time) AS bucket,
    app_id,
    function,
    (CASE WHEN response_us <= 0 THEN 0 ELSE floor(ln(response_us::float8) / ln(1.02::float8)) + 1 END)::smallint AS bin,
    count(*) AS calls
FROM events
GROUP BY
    time_bucket(INTERVAL '1 hour', time),
    app_id,
    function,
    (CASE WHEN response_us <= 0 THEN 0 ELSE floor(ln(response_us::float8) / ln(1.02::float8)) + 1 END)::smallint
WITH NO DATA;

SELECT set_chunk_time_interval('events_1h_function_hist', INTERVAL '90 days');
CREATE INDEX events_1h_function_hist_covering
    ON events_1h_function_hist (app_id, bucket) INCLUDE (function, bin, calls);

CREATE MATERIALIZED VIEW events_1h_app_hist
WITH (
    timescaledb.continuous,
    timescaledb.materialized_only = false,
    timescaledb.create_group_indexes = false
) AS
SELECT
    time_bucket(INTERVAL '1 hour', bucket) AS bucket,
    app_id,
    bin,
    sum(calls)::bigint AS calls
FROM events_1h_function_hist
GROUP BY time_bucket(INTERVAL '1 hour', bucket), app_id, bin
WITH NO DATA;

SELECT set_chunk_time_interval('events_1h_app_hist', INTERVAL '90 days');
CREATE INDEX events_1h_app_hist_covering
    ON events_1h_app_hist (app_id, bucket) INCLUDE (bin, calls);

SELECT add_continuous_aggregate_policy(
    'events_1h_function_hist',
    start_offset => INTERVAL '1 day',
    end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '30 minutes'
);

SELECT add_continuous_aggregate_policy(
    'events_1h_app_hist',
    start_offset => INTERVAL '7 days',
    end_offset => INTERVAL '2 hours',
    schedule_interval => INTERVAL '30 minutes'
);

ALTER TABLE retention DROP CONSTRAINT retention_relation_check;
ALTER TABLE retention ADD CONSTRAINT retention_relation_check CHECK (relation IN (
    'events', 'events_1m', 'events_1h',
    'events_1h_app', 'events_1h_function', 'events_1h_consumer', 'events_1m_app',
    'events_1h_function_hist', 'events_1h_app_hist'));

INSERT INTO retention (relation, keep_s, dropped_before)
SELECT n.relation, h.keep_s,
       greatest(h.dropped_before, e.dropped_before, now() - make_interval(secs => e.keep_s))
FROM retention h, retention e,
     unnest(ARRAY['events_1h_function_hist', 'events_1h_app_hist']) AS n(relation)
WHERE h.relation = 'events_1h' AND e.relation = 'events';

SELECT add_retention_policy(n.relation::regclass, drop_after => make_interval(secs => r.keep_s))
FROM retention r,
     unnest(ARRAY['events_1h_function_hist', 'events_1h_app_hist']) AS n(relation)
WHERE r.relation = 'events_1h' AND r.keep_s IS NOT NULL;
