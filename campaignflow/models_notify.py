"""Store tables for notifications (outbox, reminder state). Migrations: versions/0003_*.py."""

from __future__ import annotations
