-- 0002 (Apache edition): the rollups events_1m and events_1h as plain hypertables
-- that the ingest path keeps up to date in the same transaction as the events.
--
-- Reversible: yes, by dropping both tables; `apinalytics.ingest.rollups.rebuild` recomputes
-- them from the raw events for any range the raw events still cover.
--
-- Shape (identical to the Community edition's continuous aggregates, so the query
-- planner reads either without knowing which): per bucket, app and combination of
-- consumer_id, method, function and status_code, what re-aggregates exactly: calls
-- (count), sum_us, min_us, max_us of response_us. url and data are not rolled up: a
-- URL with its query string is nearly unique per call, so such a rollup would be as
-- big as the raw table; queries on them read raw events.
--
-- Primary key (app_id, bucket, consumer_id, method, function, status_code):
--   * it is the upsert's conflict target, so it must hold every grouping column;
--   * every read is "one app, a bucket range", optionally filtered on dimensions and
--     grouped by one: app_id then bucket makes that a single contiguous index range
--     scan, and the dimension filters are checked on the rows the range returns (a
--     dimension in second place would split the range into one scan per value);
--   * the rollup upkeep upserts keys sorted in this same order, which is also the
--     lock order that keeps concurrent batches from deadlocking.
-- No other index: the time-only index create_hypertable would add is never used
-- alone, and each extra index slows every ingest.
--
-- Chunks: 7 days for the minute rollup, 90 days for the hour one. A minute rollup of
-- low-traffic data is more than half the size of the raw events (whose chunks are one
-- day), so a week of it stays a few raw chunks' worth; the hour rollup has at most
-- 1/60 of the minute one's rows, so a quarter per chunk keeps chunks comparable in
-- size and few in number for the year-long ranges it serves. Retention drops whole
-- chunks: a week and a quarter are the granularity of rollup retention.

CREATE TABLE events_1m (
    bucket      timestamptz NOT NULL,
    app_id      integer     NOT NULL,
    consumer_id text        NOT NULL,
    method      text        NOT NULL,
    function    text        NOT NULL,
    status_code smallint    NOT NULL,
    calls       bigint      NOT NULL,
    sum_us      bigint      NOT NULL,
    min_us      bigint      NOT NULL,
    max_us      bigint      NOT NULL,
    PRIMARY KEY (app_id, bucket, consumer_id, method, function, status_code)
);

SELECT create_hypertable(
    'events_1m',
    by_range('bucket', INTERVAL '7 days'),
    create_default_indexes => false
);

CREATE TABLE events_1h (LIKE events_1m INCLUDING ALL);

SELECT create_hypertable(
    'events_1h',
    by_range('bucket', INTERVAL '90 days'),
    create_default_indexes => false
);
