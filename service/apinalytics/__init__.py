"""APInalytics: analytics for APIs, self-hosted on TimescaleDB."""

__version__ = "0.1.0"
