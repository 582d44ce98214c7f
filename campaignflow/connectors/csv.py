"""CSV exports: one file, or every *.csv in a folder, with a column mapping (our name -> the export's).

Read in chunks, so a folder of large exports streams. Without --since/--until
every row is read (the files are the whole truth); with them, only that window.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Iterator

from campaignflow.connectors.base import Connector, Part, MalformedResponse, SourceError, day, number

REQUIRED = ("date", "campaign", "impressions", "clicks", "spend")
OPTIONAL = ("campaign_id", "ad_group", "ad", "conversions", "conversion_value", "currency")
CHUNK = 50_000


class CsvConnector(Connector):
    kind = "csv"
    default_lookback_days = 0
    windowed = False

    def files(self) -> list[Path]:
        path = Path(self.config.path or "")
        path = path if path.is_absolute() else self.config.base_dir / path
        files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
        if not self.config.path or not files or not all(f.is_file() for f in files):
            raise self.http.fail(SourceError, f"no CSV file at {path}; fix `path` in the spec (a file or a folder of *.csv)")
        return files

    def parts(self, since: dt.date | None, until: dt.date | None) -> list[Part]:
        return [Part(since, until, 1, f) for f in self.files()]

    def pages(self, part: Part) -> Iterator[list[tuple]]:
        import pandas as pd

        since, until, file = part.since, part.until, part.file

        theirs = {ours: self.config.columns.get(ours, ours) for ours in (*REQUIRED, *OPTIONAL)}
        lo, hi = (since.isoformat() if since else None), (until.isoformat() if until else None)
        try:
            reader = pd.read_csv(file, dtype=str, keep_default_na=False, chunksize=CHUNK)
            for n, frame in enumerate(reader):
                if n == 0:
                    missing = [ours for ours in REQUIRED if theirs[ours] not in frame.columns]
                    if missing:
                        pairs = ", ".join(f"{m}: <their column>" for m in missing)
                        raise self.http.fail(MalformedResponse, f"{file.name} has no column(s) "
                                             f"{', '.join(theirs[m] for m in missing)}; map them with `columns:` in "
                                             f"the spec ({pairs}); its columns are {', '.join(frame.columns)}")
                cols = {ours: frame[col].tolist() if col in frame.columns else None for ours, col in theirs.items()}
                page = []
                for i in range(len(frame)):
                    where = f"{file.name} line {n * CHUNK + i + 2}"
                    date = day(self.http, cols["date"][i], f"{where}: {theirs['date']}")
                    if (lo and date < lo) or (hi and date > hi):
                        continue
                    name = cols["campaign"][i]
                    get = lambda k: cols[k][i] if cols[k] is not None else ""  # noqa: E731
                    page.append((date, self.config.account, get("campaign_id") or name, get("ad_group"), get("ad"), name,
                                 number(self.http, cols["impressions"][i], f"{where}: {theirs['impressions']}", integer=True),
                                 number(self.http, cols["clicks"][i], f"{where}: {theirs['clicks']}", integer=True),
                                 number(self.http, cols["spend"][i], f"{where}: {theirs['spend']}"),
                                 number(self.http, get("conversions"), f"{where}: {theirs['conversions']}"),
                                 number(self.http, get("conversion_value"), f"{where}: {theirs['conversion_value']}"),
                                 get("currency") or self.config.currency))
                yield page
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise self.http.fail(MalformedResponse, f"{file.name} is not a readable CSV ({str(exc).splitlines()[0]})") from None
