-- 0004: retention settings per relation, and how far data has already been dropped.
--
-- Reversible: yes, by dropping the table (and, on the Community edition, the
-- retention policies `apinalytics retention set` added); no event or rollup row
-- lives here.
--
-- One row per relation the retention scripts manage (raw events and each rollup).
--   * keep_s: how long data is kept, in seconds; NULL keeps it forever, the default,
--     so nothing is ever deleted until a DBA decides it.
--   * dropped_before: data before this time has been (or may have been) dropped,
--     whatever the retention is now. It only moves forward. It matters once a
--     retention is made longer: the old, shorter one already removed data that the
--     new one would still claim to hold.
-- The query planner reads this table on every query (apinalytics.retention.horizons),
-- so it stays three rows behind a primary key.

CREATE TABLE retention (
    relation       text PRIMARY KEY CHECK (relation IN ('events', 'events_1m', 'events_1h')),
    keep_s         bigint CHECK (keep_s > 0),
    dropped_before timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

INSERT INTO retention (relation) VALUES ('events'), ('events_1m'), ('events_1h');
