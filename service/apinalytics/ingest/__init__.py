"""Event ingest: decoding and limits, validation, the atomic write with its pending stretches."""
