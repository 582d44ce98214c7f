"""CSV exports: one file, or every *.csv in a folder, with a column mapping (our name -> the export's).

Read with the standard library's strict CSV reader, a page at a time, so a
folder of large exports streams and every row keeps its line number. Without
--since/--until every row is read (the files are the whole truth); with them,
only that window.

The files are user data, so this reader is strict where a platform's answer
would not need to be: a file must sit inside the spec's own folder (symlinks
resolved), a row must have as many fields as the header, a blank required
cell (date, campaign, impressions, clicks, spend) is an error while a blank
conversions or conversion_value cell is unknown (stored as NULL), and one
key (date, campaign, ad group, ad) twice in the files is refused with both
lines named. Errors name the file, the line and
the column, and never repeat what the file contains. The bounds every row of
every source must meet (no negative or absurd numbers, dates near the
campaign) are checked once for all connectors in `campaignflow.ingest`.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from pathlib import Path
from typing import Any, Iterator

from campaignflow.connectors import register
from campaignflow.connectors.base import MEASURES, Connector, MalformedResponse, MetricRow, Part, SourceError, SourceOptions

# The columns campaignflow reads (our names; `columns:` maps them onto an export's).
COLUMNS = ("date", "campaign", "campaign_id", "ad_group", "ad", "impressions", "clicks", "spend", "conversions",
           "conversion_value", "currency")
REQUIRED = ("date", "campaign", "impressions", "clicks", "spend")
OPTIONAL = tuple(c for c in COLUMNS if c not in REQUIRED)
WHOLE = ("impressions", "clicks")
CHUNK = 50_000
DAY = re.compile(r"(\d{4})-?(\d{2})-?(\d{2})")


def inside_folder(folder: Path, path: str) -> Path | None:
    """`path` resolved against `folder` with every symlink followed, or None when it leads outside the folder."""
    root = folder.resolve()
    target = (root / path).resolve()
    return target if target.is_relative_to(root) else None


class Page(list):
    """A page of rows that knows the file line of each row, so a refused row is named by its line."""

    def __init__(self, file: Path):
        super().__init__()
        self.file, self.lines = file, []

    def where(self, index: int) -> str:
        return f"{self.file.name} line {self.lines[index]}"


def leaves_folder(path: str) -> bool:
    """Does `path`, read relative to the spec's folder, lead out of it (absolute, or more `..` than folders)?
    Checked on the spec's text; symlinks are followed where the files are read (`inside_folder`)."""
    if Path(path).is_absolute():
        return True
    depth = 0
    for part in Path(path).parts:
        depth += -1 if part == ".." else 0 if part == "." else 1
        if depth < 0:
            return True
    return False


@register
class CsvConnector(Connector):
    kind = "csv"
    options = SourceOptions(summary="exports", account_label="a label of your choice", lookback_days=0,
                            columns=COLUMNS)
    limits = None  # local files: no platform to throttle
    windowed = False

    @classmethod
    def source_problems(cls, source: Any) -> list[str]:
        problems = []
        if not source.path:
            problems.append("path: a csv source needs `path` (a file or folder of exports)")
        elif leaves_folder(source.path):
            problems.append(f"path: {source.path!r} is outside the spec's folder; put the exports in that folder "
                            "(or below it) and give `path` relative to it, e.g. data/exports/")
        for ours in source.columns:
            if ours not in COLUMNS:
                problems.append(f"columns.{ours}: not a column campaignflow reads; use one of {', '.join(COLUMNS)}")
        return problems

    def unknown_measures(self) -> frozenset[str]:
        return frozenset(MEASURES) - set(REQUIRED)  # a blank conversions cell: not known, not 0

    def files(self) -> list[Path]:
        folder = self.config.base_dir
        path = inside_folder(folder, self.config.path or "")
        if path is None:
            raise self.http.fail(SourceError, f"`path` {self.config.path!r} leads outside the spec's folder {folder}; "
                                              "put the exports in that folder and give `path` relative to it")
        files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
        if not self.config.path or not files or not all(f.is_file() for f in files):
            raise self.http.fail(SourceError, f"no CSV file at {path}; fix `path` in the spec (a file or a folder of *.csv)")
        for f in files:
            if inside_folder(folder, str(f)) is None:  # a symlink in the folder that points out of it
                raise self.http.fail(SourceError, f"{f.name} links outside the spec's folder {folder}; "
                                                  "copy the export into the folder instead")
        return files

    def parts(self, since: dt.date | None, until: dt.date | None) -> list[Part]:
        self.seen: dict[tuple, str] = {}  # key -> where it was first read, across all files of the run
        return [Part(since, until, 1, f) for f in self.files()]

    def pages(self, part: Part) -> Iterator[list[MetricRow]]:
        file = part.file
        try:
            with open(file, newline="", encoding="utf-8-sig") as handle:
                yield from self._read(csv.reader(handle, strict=True), file, part)
        except UnicodeDecodeError:
            raise self.http.fail(MalformedResponse, f"{file.name} is not UTF-8 text; export it as CSV in UTF-8") from None
        except csv.Error as exc:
            raise self.http.fail(MalformedResponse, f"{file.name} is not a readable CSV ({exc})") from None
        except OSError as exc:
            raise self.http.fail(SourceError, f"{file.name} cannot be read ({exc.strerror})") from None

    def _columns(self, header: list[str], file: Path) -> dict[str, int]:
        """Our column name -> its position in this file's header (optional columns only when present)."""
        theirs = {ours: self.config.columns.get(ours, ours) for ours in (*REQUIRED, *OPTIONAL)}
        missing = [theirs[ours] for ours in REQUIRED if theirs[ours] not in header]
        if missing:
            pairs = ", ".join(f"{ours}: <their column>" for ours in REQUIRED if theirs[ours] in missing)
            raise self.http.fail(MalformedResponse, f"{file.name} has no column(s) {', '.join(missing)}; map them with "
                                                    f"`columns:` in the spec ({pairs})")
        twice = [col for col in theirs.values() if header.count(col) > 1]
        if twice:
            raise self.http.fail(MalformedResponse, f"{file.name} has the column {twice[0]!r} twice in its header; "
                                                    "keep one")
        return {ours: header.index(col) for ours, col in theirs.items() if col in header}

    def _read(self, reader, file: Path, part: Part) -> Iterator[list[MetricRow]]:  # noqa: ANN001
        header = next((row for row in reader if any(cell.strip() for cell in row)), None)
        if header is None:
            raise self.http.fail(MalformedResponse, f"{file.name} is empty; an export needs a header row and its rows")
        header = [cell.strip() for cell in header]
        at = self._columns(header, file)
        names = {ours: self.config.columns.get(ours, ours) for ours in at}
        lo, hi = (part.since.isoformat() if part.since else None), (part.until.isoformat() if part.until else None)
        page, previous = Page(file), reader.line_num
        for row in reader:
            line, previous = previous + 1, reader.line_num  # a quoted field may span lines: name the first
            if not any(cell.strip() for cell in row):
                continue  # a blank line carries no data
            where = f"{file.name} line {line}"
            if len(row) != len(header):
                raise self.http.fail(MalformedResponse, f"{where} has {len(row)} field(s) where the header has "
                                                        f"{len(header)}; every row needs one value per column")
            cell = {ours: row[i].strip() for ours, i in at.items()}
            for ours in REQUIRED:
                if not cell[ours]:
                    raise self.http.fail(MalformedResponse, f"{where}: column {names[ours]!r} is blank; "
                                                            "every row needs a value there (0 when there were none)")
            date = self._day(cell["date"], where, names["date"])
            if (lo and date < lo) or (hi and date > hi):
                continue
            name = cell["campaign"]
            key = (date, cell.get("campaign_id") or name, cell.get("ad_group", ""), cell.get("ad", ""))
            if key in self.seen:
                raise self.http.fail(MalformedResponse, f"{where} repeats the row of {self.seen[key]} (same date, "
                                                        "campaign, ad group and ad); keep one of them")
            self.seen[key] = where
            values = [self._measure(cell[ours], where, names[ours], ours in WHOLE) if ours in at else 0
                      for ours in MEASURES]  # an optional measure the export does not have is 0
            page.append(MetricRow(date, self.config.account, key[1], key[2], key[3], name, *values,
                                  cell.get("currency") or self.config.currency))
            page.lines.append(line)
            if len(page) >= CHUNK:
                yield page
                page = Page(file)
        yield page

    def _day(self, text: str, where: str, column: str) -> str:
        match = DAY.fullmatch(text)
        try:
            if match:
                return dt.date(*map(int, match.groups())).isoformat()
        except ValueError:
            pass
        raise self.http.fail(MalformedResponse, f"{where}: column {column!r} is not a date; "
                                                "write it as YYYY-MM-DD, e.g. 2027-01-31")

    def _measure(self, text: str, where: str, column: str, whole: bool) -> int | float | None:
        """A cell as a number; blank is None (unknown: stored as NULL, which `kpis` shows as not reported)."""
        if not text:
            return None
        try:
            value = float(text)
        except ValueError:
            raise self.http.fail(MalformedResponse, f"{where}: column {column!r} is not a number") from None
        if not whole:
            return value
        if not value.is_integer():
            raise self.http.fail(MalformedResponse, f"{where}: column {column!r} is not a whole number")
        return int(text) if text.lstrip("+-").isdigit() else int(value)
