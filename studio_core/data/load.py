"""Validate a whole dataset row by row and normalise it to chat conversations.

Every bad row is collected (not just the first), so one run of the loader tells the user everything to fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from studio_core.data.schemas import ROW_SCHEMAS, RowError, detect_layout, normalise_record
from studio_core.data.sources import SourceRecord, locate, read_files, unit_for
from studio_core.digest import sha256_file, sha256_files, sha256_records
from studio_core.errors import DataError

BAD_ROW_POLICIES = ("fail", "skip")
_SHOWN = 10


@dataclass(frozen=True)
class BadRow:
    """A row that cannot be used: where it is and why."""

    location: int
    reason: str
    code: str = "invalid"  # what kind of problem (the quality report groups by it)
    line: int | None = None  # the physical start line, where `location` is a CSV record number


@dataclass
class LoadedData:
    """A validated dataset: normalised conversations in file order, plus every bad row."""

    file: str
    file_format: str
    row_schema: str
    unit: str
    rows: list[list[dict]] = field(default_factory=list)
    locations: list[int] = field(default_factory=list)
    bad_rows: list[BadRow] = field(default_factory=list)
    source_sha256: str = ""
    columns: dict[str, str] = field(default_factory=dict)  # the column mapping used (given or guessed)
    columns_guessed: bool = False  # True when `columns` was guessed from aliases, not set in data.columns
    notes: list[str] = field(default_factory=list)  # how the data was found (split, JSON field, cache)


class BadRowsError(DataError):
    """Bad rows stop the load; the message lists them with their lines and says how to fix them."""

    def __init__(self, message: str, file: str, bad_rows: list[BadRow]):
        # The message already names the file and each line, so DataError must not prefix one location.
        super().__init__(message)
        self.file = file
        self.line = bad_rows[0].location
        self.bad_rows = bad_rows


def format_bad_rows(file: str, unit: str, bad_rows: list[BadRow], limit: int = 10) -> str:
    """One line per bad row (the first `limit`) as `<file> line 7: <reason>`, then the total count."""
    lines = [f"{file} {unit} {bad.location}{_line(bad)}: {bad.reason}" for bad in bad_rows[:limit]]
    if len(bad_rows) > limit:
        lines.append(f"... and {len(bad_rows) - limit} more")
    noun = "bad row" if len(bad_rows) == 1 else "bad rows"
    lines.append(f"{len(bad_rows)} {noun} in total")
    return "\n".join(lines)


def _line(bad: BadRow) -> str:
    return f" (line {bad.line})" if bad.line is not None and bad.line != bad.location else ""


def load_conversations(
    path: str | Path,
    file_format: str = "auto",
    row_schema: str = "auto",
    columns: dict[str, str] | None = None,
    on_bad_rows: str = "fail",
) -> LoadedData:
    """Read, validate and normalise the data file at `path`; `DataError` says what to fix."""
    _check_options(row_schema, on_bad_rows)
    # locate checks the path first, so a directory is reported as such, not as an unknown extension.
    notes: list[str] = []
    files, fmt = locate(path, file_format, notes)
    sources = list(read_files(files, fmt, notes))
    root = Path(os.path.commonpath(files))
    digest = sha256_file(files[0]) if len(files) == 1 else sha256_records([sha256_files(files, root)])
    data = LoadedData(str(path), fmt, row_schema, unit_for(fmt), source_sha256=digest, notes=notes)
    return _validate(data, sources, columns, on_bad_rows)


def load_records_as_conversations(
    records: list[dict],
    row_schema: str = "auto",
    columns: dict[str, str] | None = None,
    name: str = "records",
    on_bad_rows: str = "fail",
) -> LoadedData:
    """Validate and normalise in-memory records (location = 1-based index) exactly as a file would be."""
    _check_options(row_schema, on_bad_rows)
    sources = [
        SourceRecord(index, record, None)
        if isinstance(record, dict)
        else SourceRecord(index, None, f"expected a record with named fields, got {type(record).__name__}")
        for index, record in enumerate(records, start=1)
    ]
    data = LoadedData(name, "records", row_schema, "row", source_sha256=sha256_records(records))
    return _validate(data, sources, columns, on_bad_rows)


def _check_options(row_schema: str, on_bad_rows: str) -> None:
    if row_schema != "auto" and row_schema not in ROW_SCHEMAS:
        raise DataError(f"unknown data.row_schema {row_schema!r}; use one of: auto, {', '.join(ROW_SCHEMAS)}")
    if on_bad_rows not in BAD_ROW_POLICIES:
        raise DataError(
            f"unknown data.on_bad_rows {on_bad_rows!r}; use one of: {', '.join(BAD_ROW_POLICIES)}"
        )


def _validate(
    data: LoadedData, sources: list[SourceRecord], columns: dict[str, str] | None, on_bad_rows: str
) -> LoadedData:
    """The one validation path shared by files and in-memory records."""
    if not sources:
        raise DataError(
            "no rows found; the dataset is empty; add rows or point data.path at another file", data.file
        )
    good = [source.record for source in sources if source.record is not None]
    data.columns = dict(columns or {})
    if data.row_schema == "auto" and good:
        data.row_schema, data.columns = detect_layout(good, columns, file=data.file)
        data.columns_guessed = data.columns != dict(columns or {})
    for source in sources:
        _add_row(data, source, data.columns)
    _apply_policy(data, len(sources), on_bad_rows)
    return data


def _add_row(data: LoadedData, source: SourceRecord, columns: dict[str, str] | None) -> None:
    if source.record is None:
        data.bad_rows.append(BadRow(source.location, source.error or "unreadable record", "unreadable", source.line))
        return
    try:
        messages = normalise_record(source.record, data.row_schema, columns)
    except RowError as exc:
        data.bad_rows.append(BadRow(source.location, exc.reason, exc.code, source.line))
        return
    data.rows.append(messages)
    data.locations.append(source.location)


def _apply_policy(data: LoadedData, total: int, on_bad_rows: str) -> None:
    if not data.bad_rows:
        return
    listing = format_bad_rows(data.file, data.unit, data.bad_rows, _SHOWN)
    if not data.rows:
        message = (
            f"all {total} rows of {data.file} are bad:\n{listing}\n"
            "fix the rows, or check data.row_schema and data.columns"
        )
        raise BadRowsError(message, data.file, data.bad_rows)
    if on_bad_rows == "fail":
        message = (
            f"{data.file} has bad rows:\n{listing}\nfix these rows, or set data.on_bad_rows=skip to drop them"
        )
        raise BadRowsError(message, data.file, data.bad_rows)
