"""The `campaignflow` command line. Commands live in campaignflow/app/commands/, one module per area.

Only typer is imported up front so `--help` answers at once; each command
imports the store, pandas or Prefect when it runs.
"""

from __future__ import annotations

import sys

import typer

from campaignflow.app.commands import app
from campaignflow.app.commands import campaigns, gates, metrics, notify, server  # noqa: F401  (they register commands)
from campaignflow.errors import SpecInvalid, UserError


def main() -> None:
    try:
        app()  # typer handles usage errors (exit 2) and --help itself
    except SpecInvalid as exc:
        typer.echo(f"{exc.source}: {len(exc.problems)} problem(s)", err=True)
        for problem in exc.problems:
            typer.echo(f"  {problem}", err=True)
        typer.echo("Nothing was written to the store.", err=True)
        sys.exit(exc.exit_code)
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted; nothing is lost: run the same command again to continue", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
