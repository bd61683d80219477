"""Prometheus metrics, one registry per application instance (no globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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

    def render(self) -> bytes:
        return generate_latest(self.registry)
