"""The hostile suite's one invariant, in one place: a bad input is refused with a message, never a
traceback, and the store's row counts are the same before and after."""

from __future__ import annotations

from sqlalchemy import create_engine, inspect, text


def store_row_counts(url: str) -> dict[str, int]:
    """Rows per table of the store at `url` (alembic's own table left out); {} when there is no store yet."""
    if url.startswith("sqlite:///"):
        from pathlib import Path

        if not Path(url[len("sqlite:///"):]).exists():
            return {}
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            tables = [t for t in inspect(conn).get_table_names() if t != "alembic_version"]
            return {t: conn.execute(text(f'select count(*) from "{t}"')).scalar_one() for t in tables}
    finally:
        engine.dispose()


def assert_refused(result, *expected: str, exit_codes: tuple[int, ...] = (1, 2)) -> str:
    """A CLI result that refused the input: a known exit code, each expected text said, no traceback."""
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode in exit_codes, f"exit {result.returncode}:\n{output}"
    for text_ in expected:
        assert text_ in output, f"{text_!r} not in:\n{output}"
    return output
