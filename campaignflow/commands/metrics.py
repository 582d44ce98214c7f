"""ingest, kpis: metric ingestion from ad and analytics platforms, and KPIs against goals."""

from __future__ import annotations
