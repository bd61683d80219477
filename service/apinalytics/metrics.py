"""Prometheus metrics, one registry per application instance (no globals).

Under ``serve --workers N`` (N > 1) the serving process sets ``PROMETHEUS_MULTIPROC_DIR``
before any worker imports prometheus_client: every worker then keeps its values in
files there, and ``/metrics``, whichever worker answers it, adds up those of all
workers (prometheus_client's multiprocess mode). Otherwise the values live in this
instance's registry.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # Read once: prometheus_client chose how it keeps values when it was imported.
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        self.events_accepted = Counter(
            "apinalytics_events_accepted",
            "Events durably stored.",
            registry=self.registry,
        )
        self.events_rejected = Counter(
            "apinalytics_events_rejected",
            "Events refused (the whole batch is refused when one event is bad).",
            ["reason"],
            registry=self.registry,
        )
        self.batches_rejected = Counter(
            "apinalytics_batches_rejected",
            "Ingest requests refused with a 4xx, by error code: those refused as a whole "
            "(a body that is not JSON, a wrong key) too, which hold no events to count.",
            ["reason"],
            registry=self.registry,
        )
        self.otlp_spans_ignored = Counter(
            "apinalytics_otlp_spans_ignored",
            "Spans sent to /v1/traces that are no request to an HTTP server, by reason "
            "(not_server: a kind other than SERVER; no_http_method: a SERVER span without "
            "an HTTP method attribute).",
            ["reason"],
            registry=self.registry,
        )
        self.requests_rejected = Counter(
            "apinalytics_requests_rejected",
            "Requests refused to keep the service within its bounds (docs/limits.md), by "
            "reason: overloaded, rate_limited, payload_too_large, too_many_includes, "
            "too_many_groups, query_timeout.",
            ["reason"],
            registry=self.registry,
        )
        self.ingest_group_batches = Histogram(
            "apinalytics_ingest_group_batches",
            "Batches written per group transaction of the ingest path.",
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
        )
        self.request_seconds = Histogram(
            "apinalytics_request_seconds",
            "HTTP request latency.",
            ["route", "method", "status"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.query_source = Counter(
            "apinalytics_query_source",
            "Sources (raw events or a rollup) read to answer time-series queries.",
            ["source"],
            registry=self.registry,
        )
        self._rollup_upkeep()
        self._replica()

    def _rollup_upkeep(self) -> None:
        """The materializer's runs, and what is pending (rollups/materializer.py)."""
        self.materializer_runs = Counter(
            "apinalytics_materializer_runs",
            "Runs of the rollup materializer, by outcome: materialized (it caught up on "
            "pending stretches), idle (nothing pending), busy (another process's "
            "materializer held the lock), failed.",
            ["outcome"],
            registry=self.registry,
        )
        # Read from the database at each scrape: under several workers, the value of
        # whichever worker answered last.
        self.pending_ranges = Gauge(
            "apinalytics_rollup_pending_ranges",
            "Pending stretches (app and hours) the rollups have not caught up on yet; "
            "queries read them from raw events.",
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        self.pending_oldest_seconds = Gauge(
            "apinalytics_rollup_pending_oldest_seconds",
            "Age of the oldest pending stretch (0 when none is pending).",
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )

    def _replica(self) -> None:
        """Reads and the read replica (replica.py, docs/replicas.md)."""
        self.reads = Counter(
            "apinalytics_reads",
            "Queries and exports by the server that read them (source: replica, primary) "
            "and why: fresh (the replica, within read_max_lag_s), strong (asked for), "
            "lagging, unavailable (the replica is down or no standby), replica_failed "
            "(read again on the primary after the replica failed it), no_replica.",
            ["source", "reason"],
            registry=self.registry,
        )
        self.replica_up = Gauge(
            "apinalytics_read_replica_up",
            "1 when the last measure reached the read replica as a standby, else 0.",
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        self.replica_lag_seconds = Gauge(
            "apinalytics_read_replica_lag_seconds",
            "At most this many seconds of the primary's commits were missing on the "
            "replica at the last measure (within the measuring interval; 0 when idle).",
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        self.replica_lag_bytes = Gauge(
            "apinalytics_read_replica_lag_bytes",
            "The primary's WAL the replica had not replayed at the last measure, in bytes.",
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )

    def render(self) -> bytes:
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        # The documented way: a registry of its own per scrape, reading every
        # process's files.
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
