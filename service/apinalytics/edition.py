"""The TimescaleDB edition the rollups are built for, chosen once.

``Edition.APACHE``: the Apache-2 build has no continuous aggregates and no policies;
the rollups are tables the materializer re-aggregates from raw events where batches
left stretches pending (``rollups/materializer.py``) and ``apinalytics retention
apply`` drops expired chunks.

``Edition.COMMUNITY``: the Community (TSL) build; the rollups are continuous
aggregates, the materializer refreshes them over the pending stretches
(``rollups/community.py``), retention policies drop expired chunks and compression
policies compress old ones.

The edition is chosen from ``SHOW timescaledb.license`` on the first migration and
recorded in the database (``migrate.py``); the app reads it once at start
(``app.py``). Every difference between the two is a property here: nowhere else
compares the edition's name.
"""

from __future__ import annotations

from enum import StrEnum

# The license string of the Community build (``SHOW timescaledb.license``).
COMMUNITY_LICENSE = "timescale"


class Edition(StrEnum):
    APACHE = "apache"
    COMMUNITY = "community"

    @classmethod
    def for_license(cls, license: str) -> Edition:
        """The edition a server of this ``timescaledb.license`` runs."""
        return cls.COMMUNITY if license == COMMUNITY_LICENSE else cls.APACHE

    def runs_on(self, license: str) -> bool:
        """Whether a server of this license can serve a database of this edition
        (continuous aggregates need the Community build)."""
        return self is Edition.APACHE or license == COMMUNITY_LICENSE

    @property
    def continuous_aggregates(self) -> bool:
        """The rollups are continuous aggregates with refresh policies (rebuild
        refreshes them rather than recomputing tables)."""
        return self is Edition.COMMUNITY

    @property
    def retention_policies(self) -> bool:
        """TimescaleDB policies drop expired chunks (else ``retention apply`` does)."""
        return self is Edition.COMMUNITY

    @property
    def compression(self) -> bool:
        """Chunks can be compressed (TimescaleDB's columnstore, a Community feature;
        ``compression.py``). The Apache build has no compression at all."""
        return self is Edition.COMMUNITY
