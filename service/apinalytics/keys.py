"""Typed keys for what the application shares between handlers (no globals)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from .db import Database
from .ingest.group import GroupWriter
from .limits import Limits
from .metrics import Metrics
from .settings import Settings

SETTINGS = web.AppKey("settings", Settings)
DB = web.AppKey("db", Database)
# The ingest path's pool: timestamptz as ints of UNIX microseconds (db.unix_us_timestamps).
INGEST_DB = web.AppKey("ingest_db", Database)
METRICS = web.AppKey("metrics", Metrics)
# Fair shares among applications: queries, raw reads, ingest rate (limits.py).
LIMITS = web.AppKey("limits", Limits)
# "apache" (rollups kept by the ingest path) or "community" (continuous aggregates).
ROLLUP_MODE = web.AppKey("rollup_mode", str)
# Where ingest requests hand their validated batches (group commit).
INGEST = web.AppKey("ingest", GroupWriter)
# The one thread that validates big ingest bodies off the event loop.
DECODER = web.AppKey("decoder", ThreadPoolExecutor)

# The authenticated Application ID of a request, for logs.
REQUEST_APP_ID = web.RequestKey("app_id", str)
