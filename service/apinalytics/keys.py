"""Typed keys for what the application shares between handlers (no globals)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from aiohttp import web

from .db import Database
from .edition import Edition
from .limits import Limits
from .metrics import Metrics
from .settings import Settings

if TYPE_CHECKING:
    # For its type only: importing it would load the ingest stack wherever a key is read.
    from .ingest.group import GroupWriter
    from .replica import Reads
    from .rollups.background import Materializer

SETTINGS = web.AppKey("settings", Settings)
DB = web.AppKey("db", Database)
# The ingest path's pool: timestamptz as ints of UNIX microseconds (db.unix_us_timestamps).
INGEST_DB = web.AppKey("ingest_db", Database)
METRICS = web.AppKey("metrics", Metrics)
# Where queries and exports read: the read replica while it is fresh, else DB.
READS: web.AppKey[Reads] = web.AppKey("reads")
# Fair shares among applications: queries, raw reads, ingest rate (limits.py).
LIMITS = web.AppKey("limits", Limits)
# The database's edition, read once at start: how the materializer keeps the rollups.
EDITION = web.AppKey("edition", Edition)
# Where ingest requests hand their validated batches (group commit).
INGEST: web.AppKey[GroupWriter] = web.AppKey("ingest")
# The rollups' background materializer (woken after each commit).
MATERIALIZER: web.AppKey[Materializer] = web.AppKey("materializer")
# The one thread that validates big ingest bodies off the event loop.
DECODER = web.AppKey("decoder", ThreadPoolExecutor)

# The authenticated Application ID of a request, for logs.
REQUEST_APP_ID = web.RequestKey("app_id", str)
