-- 0005 (Apache edition): three narrower hour rollups, events_1h_app (per app),
-- events_1h_function (per app and function) and events_1h_consumer (per app and
-- consumer_id), kept up to date by the ingest path like events_1h.
--
-- Why: events_1h keys each hour by consumer × method × function × status code, so on
-- the benchmark data (docs/benchmarks.md, 10M events) it still holds 0.24 rows per
-- raw event (2,424,395 rows) and the 7- and 30-day panels read 109,442 and 472,124 of
-- them (250-800 ms per request). The same hours per app, per function and per
-- consumer are 7,210, 199,358 and 345,938 rows, and the panels' SQL on them takes
-- 2-50 ms (bench/narrow_rollups.py). The planner picks, among hour rollups that cover
-- a query's group and filter fields, the one with the fewest dimensions.
--
-- Reversible: yes, by dropping the three tables and deleting their rows from
-- `retention` (the planner then uses events_1h again, after the declarations in
-- apinalytics/rollups.py are removed too); they hold nothing events_1h does not.
--
-- Shape: as events_1h, with only the rollup's own dimensions. Primary key (app_id,
-- bucket, <dimension>): the upsert's conflict target and lock order, and one
-- contiguous index range per "one app, a bucket range" read, as in 0002. No other
-- index.
--
-- Chunks: 90 days, as events_1h: `apinalytics retention set --hour` sets their
-- retention together with events_1h's, and whole chunks are what retention drops, so
-- the same interval drops them alike. They are far smaller than events_1h, so this
-- is a few small chunks a year.
--
-- Existing data: filled from events_1h in this transaction (a scan of events_1h, far
-- cheaper than re-reading raw events). Batches written while this migration runs by
-- a service that predates it do not reach these tables: migrate with ingest stopped,
-- or rebuild the rollups over that stretch afterwards. Their retention starts as
-- events_1h's (keep and how far it was already dropped).

CREATE TABLE events_1h_app (
    bucket      timestamptz NOT NULL,
    app_id      integer     NOT NULL,
    calls       bigint      NOT NULL,
    sum_us      bigint      NOT NULL,
    min_us      bigint      NOT NULL,
    max_us      bigint      NOT NULL,
    PRIMARY KEY (app_id, bucket)
);

SELECT create_hypertable(
    'events_1h_app',
    by_range('bucket', INTERVAL '90 days'),
    create_default_indexes => false
);

CREATE TABLE events_1h_function (
    bucket      timestamptz NOT NULL,
    app_id      integer     NOT NULL,
    function    text        NOT NULL,
    calls       bigint      NOT NULL,
    sum_us      bigint      NOT NULL,
    min_us      bigint      NOT NULL,
    max_us      bigint      NOT NULL,
    PRIMARY KEY (app_id, bucket, function)
);

SELECT create_hypertable(
    'events_1h_function',
    by_range('bucket', INTERVAL '90 days'),
    create_default_indexes => false
);

CREATE TABLE events_1h_consumer (
    bucket      timestamptz NOT NULL,
    app_id      integer     NOT NULL,
    consumer_id text        NOT NULL,
    calls       bigint      NOT NULL,
    sum_us      bigint      NOT NULL,
    min_us      bigint      NOT NULL,
    max_us      bigint      NOT NULL,
    PRIMARY KEY (app_id, bucket, consumer_id)
);

SELECT create_hypertable(
    'events_1h_consumer',
    by_range('bucket', INTERVAL '90 days'),
    create_default_indexes => false
);

INSERT INTO events_1h_app (bucket, app_id, calls, sum_us, min_us, max_us)
SELECT bucket, app_id, sum(calls)::bigint, sum(sum_us)::bigint, min(min_us), max(max_us)
FROM events_1h
GROUP BY bucket, app_id;

INSERT INTO events_1h_function (bucket, app_id, function, calls, sum_us, min_us, max_us)
SELECT bucket, app_id, function, sum(calls)::bigint, sum(sum_us)::bigint, min(min_us), max(max_us)
FROM events_1h
GROUP BY bucket, app_id, function;

INSERT INTO events_1h_consumer (bucket, app_id, consumer_id, calls, sum_us, min_us, max_us)
SELECT bucket, app_id, consumer_id, sum(calls)::bigint, sum(sum_us)::bigint, min(min_us), max(max_us)
FROM events_1h
GROUP BY bucket, app_id, consumer_id;

ALTER TABLE retention DROP CONSTRAINT retention_relation_check;
ALTER TABLE retention ADD CONSTRAINT retention_relation_check CHECK (relation IN (
    'events', 'events_1m', 'events_1h',
    'events_1h_app', 'events_1h_function', 'events_1h_consumer'));

INSERT INTO retention (relation, keep_s, dropped_before)
SELECT n.relation, r.keep_s, r.dropped_before
FROM retention r,
     unnest(ARRAY['events_1h_app', 'events_1h_function', 'events_1h_consumer']) AS n(relation)
WHERE r.relation = 'events_1h';
