"""Event ingest: decoding and limits, validation, the atomic write, rollup upkeep."""
