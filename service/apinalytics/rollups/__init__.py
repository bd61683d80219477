"""The rollups: declared once (``declared``), kept up to date per edition, rebuilt on demand.

- ``declared``: the rollup table (relations, widths, dimensions, sources).
- ``pending``: the stretches batches touched that the rollups have not caught up on.
- ``materializer``: brings the rollups up to date over them, in the background.
- ``community``: Community edition, the refresh of those stretches.
- ``rebuild``: ``apinalytics rollups rebuild``, in either edition.

See docs/rollups.md.
"""

from .declared import DIMENSION_TYPES, DIMENSIONS, RAW, ROLLUPS, Rollup

__all__ = ["DIMENSIONS", "DIMENSION_TYPES", "RAW", "ROLLUPS", "Rollup"]
