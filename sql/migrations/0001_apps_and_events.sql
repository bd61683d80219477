-- 0001: applications, the events hypertable, idempotency keys.
--
-- Reversible: yes, by dropping the three tables (which deletes every event).
--
-- apps: `id` is a small internal integer so every event row and rollup row carries
-- 4 bytes instead of the public ID's 16+; `public_id` is what clients send in
-- X-Auth-User. Keys are stored only as SHA-256 digests: they are 256-bit random
-- strings, so a slow password hash would add nothing but latency to every request.
--
-- events: one row per reported request.
--   * `time` is timestamptz (microsecond resolution, as SPEC keeps timestamps).
--   * No foreign key to apps: it would cost a lookup per inserted row, and deleting
--     an app deletes its events explicitly in the same transaction.
--   * response_us is bigint: microseconds of a slow call overflow nothing, and sums
--     over millions of rows stay exact (they are summed as numeric, cast back).
--   * status_code is smallint (100-599).
--   * Chunks of one day: at the expected tens of events per second per app the
--     chunk plus its index fits comfortably in memory, and retention can drop whole
--     days.
--   * One index (app_id, time): every read is "one app, a time range". The default
--     time-only index would be redundant, so it is not created.

CREATE TABLE apps (
    id               integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    public_id        text NOT NULL UNIQUE,
    name             text NOT NULL,
    owner_id         bigint,
    write_key_digest bytea NOT NULL,
    read_key_digest  bytea NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE events (
    time        timestamptz NOT NULL,
    app_id      integer     NOT NULL,
    consumer_id text        NOT NULL,
    method      text        NOT NULL,
    url         text        NOT NULL,
    function    text        NOT NULL,
    response_us bigint      NOT NULL CHECK (response_us >= 0),
    status_code smallint    NOT NULL CHECK (status_code BETWEEN 100 AND 599),
    data        jsonb
);

SELECT create_hypertable(
    'events',
    by_range('time', INTERVAL '1 day'),
    create_default_indexes => false
);

CREATE INDEX events_app_time ON events (app_id, time);

-- A retried batch with the same Idempotency-Key within the TTL is answered with the
-- original count and stores nothing. The row is written in the batch's transaction,
-- so a concurrent retry waits on the primary key until the first attempt commits
-- or rolls back. `created_at` is indexed for the periodic purge of expired keys.
CREATE TABLE idempotency_keys (
    app_id     integer     NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    key        text        NOT NULL,
    accepted   integer     NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (app_id, key)
);

CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
