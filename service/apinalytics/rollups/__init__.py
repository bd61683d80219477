"""The rollups: declared once (``declared``), kept up to date per edition, rebuilt on demand.

- ``declared``: the rollup table (relations, widths, dimensions, sources).
- ``apache``: Apache edition, the upkeep inside the ingest transaction.
- ``community``: Community edition, the refresh of back-dated events after COMMIT.
- ``rebuild``: ``apinalytics rollups rebuild``, in either edition.

See docs/rollups.md.
"""

from .declared import DIMENSION_TYPES, DIMENSIONS, RAW, ROLLUPS, Rollup

__all__ = ["DIMENSIONS", "DIMENSION_TYPES", "RAW", "ROLLUPS", "Rollup"]
