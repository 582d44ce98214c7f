"""channels, outbox: chat and email notifications."""

from __future__ import annotations
