"""CLI commands, one module per area; each registers its commands on `app`."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

app = typer.Typer(
    name="campaignflow",
    help="Run marketing campaigns as Prefect flows: approval gates, chat reminders, metric ingestion, KPI reports.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)
