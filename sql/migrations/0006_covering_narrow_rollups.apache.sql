-- 0006 (Apache edition): the narrow hour rollups (events_1h_app, events_1h_function,
-- events_1h_consumer) are read by index-only scans.
--
-- Why: a 7-day panel grouped by consumer reads one row per hour and consumer
-- (8,347 rows for the busiest benchmark app, docs/benchmarks.md) through the primary
-- key, then fetches each row from the heap: 3,083 heap pages, 11 ms of a 50 ms
-- statement when they are cached and several times that when raw reads have evicted
-- them. With the measures in the index (INCLUDE) the same read is an index-only scan
-- over about 64 index pages (1.7 ms), wherever the rows lie in the heap.
--
-- How: the primary key itself INCLUDEs calls, sum_us, min_us and max_us, so there is
-- still one index per table: the upsert's conflict target and lock order are the same
-- key columns as before. Cost: an upsert that changes a measure can no longer be a
-- HOT update (the index holds the measures), so each one adds an index entry; these
-- tables hold one row per app-hour (and function or consumer), a few rows per batch.
-- Index-only scans need the visibility map: pages of past hours are all-visible once
-- autovacuum has passed; the current hour's rows are fetched from the heap as before.
--
-- Reversible: yes, by adding the primary keys back without INCLUDE.

ALTER TABLE events_1h_app DROP CONSTRAINT events_1h_app_pkey;
ALTER TABLE events_1h_app
    ADD PRIMARY KEY (app_id, bucket) INCLUDE (calls, sum_us, min_us, max_us);

ALTER TABLE events_1h_function DROP CONSTRAINT events_1h_function_pkey;
ALTER TABLE events_1h_function
    ADD PRIMARY KEY (app_id, bucket, function) INCLUDE (calls, sum_us, min_us, max_us);

ALTER TABLE events_1h_consumer DROP CONSTRAINT events_1h_consumer_pkey;
ALTER TABLE events_1h_consumer
    ADD PRIMARY KEY (app_id, bucket, consumer_id) INCLUDE (calls, sum_us, min_us, max_us);
