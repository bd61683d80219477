-- 0008: stretches of time whose events the rollups have not caught up on yet.
--
-- Reversible: yes, by dropping the table once it is empty (`apinalytics rollups
-- catch-up` empties it); no event or rollup row lives here.
--
-- The ingest transaction inserts, next to its COPY, one row per app and touched
-- stretch of time (whole hours, the coarsest rollup width; a batch of live traffic is
-- one row, a scattered batch a few). The materializer (service/apinalytics/rollups/
-- materializer.py) brings the rollups up to date for those stretches and deletes
-- exactly the rows it read, in the same transaction as the rollup rows (Apache) or
-- after the refreshes (Community). Until then the query planner reads the app's
-- pending stretches from raw events. An empty table means the rollups hold every
-- stored event. The same in both editions.
--
-- Existing data needs no row here: up to this migration the ingest path kept the
-- rollups up to date before answering.

CREATE TABLE rollup_pending (
    id         bigserial PRIMARY KEY,
    app_id     integer NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    start      timestamptz NOT NULL,
    "end"      timestamptz NOT NULL CHECK ("end" > start),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Every query reads its app's pending stretches overlapping its range.
CREATE INDEX rollup_pending_app ON rollup_pending (app_id, start);
