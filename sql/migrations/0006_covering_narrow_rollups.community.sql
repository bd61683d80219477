-- 0006 (Community edition): the narrow hour rollups (events_1h_app,
-- events_1h_function, events_1h_consumer) are read by index-only scans.
--
-- Why: a 7-day panel grouped by consumer reads one row per hour and consumer
-- (8,347 rows for the busiest benchmark app, docs/benchmarks.md) through the
-- (app_id, bucket) index, then fetches each row from the materialization heap:
-- thousands of heap pages, most of the statement's time when raw reads have evicted
-- them. With the dimension and the measures in the index (INCLUDE) the same read is
-- an index-only scan over a few dozen index pages, wherever the rows lie in the heap.
--
-- How: each aggregate's (app_id, bucket) index from 0005 is replaced by one on the
-- same key that INCLUDEs every other column; it serves the same reads ("one app, a
-- bucket range"). An index created on a continuous aggregate is created on its
-- materialization hypertable (and its chunks); the old ones are dropped where they
-- live, found by name. Refreshes write the rows once per bucket, so the wider index
-- costs little on the write side. Index-only scans need the visibility map: pages are
-- all-visible once autovacuum has passed them.
--
-- Reversible: yes, by recreating the (app_id, bucket) indexes and dropping these.

CREATE INDEX events_1h_app_covering
    ON events_1h_app (app_id, bucket) INCLUDE (calls, sum_us, min_us, max_us);
CREATE INDEX events_1h_function_covering
    ON events_1h_function (app_id, bucket) INCLUDE (function, calls, sum_us, min_us, max_us);
CREATE INDEX events_1h_consumer_covering
    ON events_1h_consumer (app_id, bucket) INCLUDE (consumer_id, calls, sum_us, min_us, max_us);

DO $$
DECLARE
    idx record;
BEGIN
    FOR idx IN
        SELECT i.schemaname, i.indexname
        FROM pg_indexes i
        WHERE i.indexname IN (
            'events_1h_app_app_bucket',
            'events_1h_function_app_bucket',
            'events_1h_consumer_app_bucket'
        )
    LOOP
        EXECUTE format('DROP INDEX %I.%I', idx.schemaname, idx.indexname);
    END LOOP;
END
$$;
