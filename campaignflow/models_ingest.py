"""Store tables for metric ingestion (cursors, runs). Migrations: versions/0002_*.py."""

from __future__ import annotations
