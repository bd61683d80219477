-- 0009 (Apache edition): latency histograms, events_1h_function_hist (per app,
-- function and hour) and events_1h_app_hist (per app and hour), kept up to date by
-- the ingest path like the other rollups. (0008 is left to another change.)
--
-- Why: a percentile needs every value, and the other rollups hold count, sum, min and
-- max only: every percentile read raw events, and past raw retention it was a 410.
-- Counts of response_us in logarithmic bins merge exactly across rows (sums), and a
-- percentile read from them is within 1 % of the exact one (docs/querying.md,
-- "Approximate answers"); precision=approximate reads them.
--
-- Shape: one row per bucket, app, (function,) and bin with the count of its events,
-- `calls`. The bin is (apinalytics/measures.py, HISTOGRAM.bin_of):
--   0 for 0 µs, else floor(ln(response_us) / ln(1.02)) + 1,
-- so bin i >= 1 holds [1.02^(i-1), 1.02^i); 86,400,000,000 µs is bin 1,272. A bin as
-- a grouping column (rather than an array of counts per row) is what a continuous
-- aggregate can materialize in the Community edition, and the two editions keep one
-- shape; docs/retention.md has the sizes per event. Primary key (app_id, bucket,
-- [function,] bin) INCLUDE (calls): the upsert's conflict target and lock order, and
-- the index reads serve index-only.
--
-- Chunks: 90 days, as events_1h: `apinalytics retention set --hour` sets theirs too.
--
-- Existing data: filled from raw events in this transaction, as far as they are
-- kept; their retention starts as events_1h's, and what raw events no longer hold is
-- recorded as dropped (`dropped_before`), so the planner never reads a histogram
-- where it is incomplete. Batches written while this migration runs by a service that
-- predates it do not reach these tables: migrate with ingest stopped, or rebuild the
-- rollups over that stretch afterwards.
--
-- Reversible: yes, by dropping both tables and deleting their rows from `retention`,
-- after their declarations in apinalytics/rollups/declared.py are removed.

CREATE TABLE events_1h_function_hist (
    bucket      timestamptz NOT NULL,
    app_id      integer     NOT NULL,
    function    text        NOT NULL,
    bin         smallint    NOT NULL,
    calls       bigint      NOT NULL,
    PRIMARY KEY (app_id, bucket, function, bin) INCLUDE (calls)
);

SELECT create_hypertable(
    'events_1h_function_hist',
    by_range('bucket', INTERVAL '90 days'),
    create_default_indexes => false
);

CREATE TABLE events_1h_app_hist (
    bucket      timestamptz NOT NULL,
    app_id      integer     NOT NULL,
    bin         smallint    NOT NULL,
    calls       bigint      NOT NULL,
    PRIMARY KEY (app_id, bucket, bin) INCLUDE (calls)
);

SELECT create_hypertable(
    'events_1h_app_hist',
    by_range('bucket', INTERVAL '90 days'),
    create_default_indexes => false
);

INSERT INTO events_1h_function_hist (bucket, app_id, function, bin, calls)
SELECT time_bucket(INTERVAL '1 hour', time), app_id, function,
       (CASE WHEN response_us <= 0 THEN 0 ELSE floor(ln(response_us::float8) / ln(1.02::float8)) + 1 END)::smallint,
       count(*)
FROM events
GROUP BY 1, 2, 3, 4;

INSERT INTO events_1h_app_hist (bucket, app_id, bin, calls)
SELECT bucket, app_id, bin, sum(calls)::bigint
FROM events_1h_function_hist
GROUP BY bucket, app_id, bin;

ALTER TABLE retention DROP CONSTRAINT retention_relation_check;
ALTER TABLE retention ADD CONSTRAINT retention_relation_check CHECK (relation IN (
    'events', 'events_1m', 'events_1h',
    'events_1h_app', 'events_1h_function', 'events_1h_consumer', 'events_1m_app',
    'events_1h_function_hist', 'events_1h_app_hist'));

-- Complete from raw events' horizon on (a whole hour later at most: the planner
-- rounds a horizon up to the rollup's buckets).
INSERT INTO retention (relation, keep_s, dropped_before)
SELECT n.relation, h.keep_s,
       greatest(h.dropped_before, e.dropped_before, now() - make_interval(secs => e.keep_s))
FROM retention h, retention e,
     unnest(ARRAY['events_1h_function_hist', 'events_1h_app_hist']) AS n(relation)
WHERE h.relation = 'events_1h' AND e.relation = 'events';
