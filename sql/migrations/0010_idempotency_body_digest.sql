-- 0010: an Idempotency-Key remembers the body it was claimed with.
--
-- Reversible: yes, by dropping the column (keys then answer any body again).
--
-- A request that reuses a key within its TTL with a different body is refused (422
-- idempotency_key_reused) rather than answered with the first batch's count: that
-- answer would tell the client its new events were stored when nothing was. The
-- column holds the SHA-256 of the request body as the service read it, after gunzip
-- (service/apinalytics/ingest/write.py, IdempotencyKey): a gzipped and a plain body
-- of the same bytes are the same request. Keys claimed before this migration have no
-- digest and keep the old behaviour (any body gets the original count) until they
-- expire. The same in both editions.

ALTER TABLE idempotency_keys ADD COLUMN body_sha256 bytea;
