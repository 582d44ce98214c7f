"""How things look, kept apart from what they mean: markdown tables for Prefect artifacts, and HTML pages
rendered from the templates in campaignflow/templates/pages/.

Page templates are ours, not a team's, so they render in a plain Jinja environment; autoescape is on, so a
gate title or a comment shows as text, never as markup.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

PAGES = Path(__file__).resolve().parent / "templates" / "pages"


def markdown_table(headers: Iterable[object], rows: Iterable[Iterable[object]]) -> str:
    """A GitHub-flavoured markdown table; a `|` or a line break inside a cell is escaped so the table holds."""
    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    headers = [cell(h) for h in headers]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


@lru_cache(maxsize=1)
def _pages():  # -> jinja2.Environment
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    return Environment(loader=FileSystemLoader(PAGES), autoescape=True, undefined=StrictUndefined,
                       keep_trailing_newline=False)


def render_page(template: str, **context: Any) -> str:
    """The HTML of page `template` (e.g. "decide.j2")."""
    return _pages().get_template(template).render(**context)
