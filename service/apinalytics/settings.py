"""The one place that reads ``APINALYTICS_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Service configuration; every field is ``APINALYTICS_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="APINALYTICS_", extra="ignore")

    # Where to reach PostgreSQL/TimescaleDB. Empty: start the embedded local cluster.
    database_url: str | None = None
    # A streaming (physical) replica of it, hot_standby on: queries and exports read
    # there while it lags at most read_max_lag_s (docs/replicas.md). Empty: none.
    read_database_url: str | None = None
    # A read goes to the primary when the replica may lack commits older than this
    # (read-your-writes after it), and the lag is measured every read_lag_interval_s.
    read_max_lag_s: float = Field(default=3.0, gt=0)
    read_lag_interval_s: float = Field(default=1.0, gt=0)
    host: str = "127.0.0.1"
    port: int = 8080
    # Project-local state: the embedded cluster's data, the development session secret.
    home: Path = Path(".apinalytics")
    # PostgreSQL's bin directory for the embedded cluster; found automatically if unset.
    pg_bindir: Path | None = None
    # Processes serving host:port (`serve --workers N`). 1: the service runs in the
    # process that was started; more: one per core is the rule (see README, Operations).
    workers: int = Field(default=1, ge=1)
    # The event loop `serve` runs on. uvloop (libuv) answered a small query about 1.3
    # times as fast in most rounds (docs/benchmarks.md); asyncio's is there for diagnosis.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"

    # Public base URL (for OAuth redirects behind a proxy); derived from the request if unset.
    public_url: str | None = None

    db_pool_max: int = 10
    # Cancels a query that runs longer; the client gets a clear 503 query_timeout.
    statement_timeout_s: float = 10.0
    # How long a request waits for a database connection before answering 503.
    db_connect_timeout_s: float = 5.0

    # Ingest limits (defaults are generous for real traffic).
    max_body_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    max_batch_events: int = Field(default=10_000, gt=0)
    max_url_length: int = Field(default=8192, gt=0)
    max_string_length: int = Field(default=256, gt=0)
    max_data_value_length: int = Field(default=1024, gt=0)
    max_data_keys: int = Field(default=32, ge=0)
    # Accepted timestamps: from now - max_event_age_s to now + max_event_future_s.
    max_event_age_s: int = Field(default=366 * 86400, gt=0)
    max_event_future_s: int = Field(default=3600, ge=0)
    # Batches of at least this many bytes are validated off the event loop.
    offload_body_bytes: int = Field(default=64 * 1024, ge=0)
    idempotency_ttl_s: int = Field(default=86400, gt=0)
    # Group commit: batches that queue while this many group transactions are in
    # flight are written together, up to this many events per transaction.
    ingest_writers: int = Field(default=2, gt=0)
    ingest_group_max_events: int = Field(default=20_000, gt=0)

    # OpenTelemetry ingest (POST /v1/traces, docs/otlp.md): the attribute that names the
    # consumer, and the attributes copied into data (JSON list), span's then resource's.
    otlp_consumer_attribute: str = "enduser.id"
    otlp_data_attributes: list[str] = Field(default_factory=list)

    # The rollups' background materializer: seconds between runs when nothing wakes it
    # (a commit does); 0 runs none in this process (`apinalytics rollups catch-up`
    # from cron, or another process, must then keep the rollups; queries stay exact).
    materializer_interval_s: float = Field(default=1.0, ge=0)

    # Query limits.
    max_buckets: int = Field(default=10_000, gt=0)

    # Bounds and fair shares (docs/limits.md). Generous defaults: real traffic never
    # meets them, a runaway client or a storm of heavy reads does.
    # How long a request waits for a connection of a pool that is busy (every
    # connection in use, the database answering) before 503 overloaded.
    busy_wait_s: float = Field(default=1.0, gt=0)
    # Time-series queries and exports one application may have running at once (429).
    max_queries_per_app: int = Field(default=16, gt=0)
    # Reads of raw events (percentiles, forced raw plans) running at once in a process;
    # the rest of the query pool stays free for rollup reads. Each takes the server's
    # parallel workers: about one per two cores of the database (docs/benchmarks.md).
    max_raw_reads: int = Field(default=2, gt=0)
    # Ingest requests per second per application (token bucket), and the burst.
    ingest_rate_per_app: float = Field(default=1000.0, gt=0)
    ingest_burst_per_app: int = Field(default=2000, gt=0)
    # A connection that has not sent a whole request head this long after opening is
    # closed; past max_connections open in a process, new ones get a 503.
    header_timeout_s: float = Field(default=10.0, gt=0)
    max_connections: int = Field(default=1000, gt=0)
    # How long an ingest request may take to send its body (408 beyond).
    body_timeout_s: float = Field(default=30.0, gt=0)
    # include=field:value filters per request.
    max_include_values: int = Field(default=100, gt=0)
    # Groups in one time-series answer, and points (groups x buckets): 400
    # too_many_groups beyond. A million points is a JSON answer of about 20 MB.
    max_groups: int = Field(default=10_000, gt=0)
    max_points: int = Field(default=1_000_000, gt=0)

    # Accounts (GitHub OAuth); all optional, the CLI path works without them.
    github_client_id: str | None = None
    github_client_secret: str | None = None
    github_authorize_url: str = "https://github.com/login/oauth/authorize"
    github_token_url: str = "https://github.com/login/oauth/access_token"
    github_api_url: str = "https://api.github.com"
    # 32 url-safe base64 bytes (Fernet key); generated under `home` in development.
    session_secret: str | None = None
    # Mark the session cookie Secure (set when served over HTTPS).
    cookie_secure: bool = False
    # A login lasts this long; the encrypted cookie is refused after it.
    session_max_age_s: int = Field(default=14 * 86400, gt=0)
    # Timeout of each call to GitHub (token exchange, user API) during login.
    github_timeout_s: float = Field(default=10.0, gt=0)

    log_level: str = "INFO"
    # Log lines as JSON objects (structured); set false for plain text in a terminal.
    log_json: bool = True
