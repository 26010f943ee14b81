"""Read raw records from a local data file (JSONL, JSON, CSV or Parquet), each tagged with its location.

Whole-file problems raise `DataError`; a problem with one record is reported on that record
(`SourceRecord.error`) so the loader can list every bad row at once.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio_core.errors import DataError

FILE_FORMATS = ("jsonl", "json", "csv", "parquet")

# What a record's `location` counts in each format: text formats point at the physical line an editor shows.
UNITS: dict[str, str] = {"jsonl": "line", "json": "line", "csv": "line", "parquet": "row"}

EXTENSIONS: dict[str, str] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}

_MAX_LISTED = 10
_JSON_WS = re.compile(r"[ \t\n\r]*")


@dataclass(frozen=True)
class SourceRecord:
    """One raw record: where it starts, and either the record or why it could not be read."""

    location: int
    record: dict | None
    error: str | None


def unit_for(file_format: str) -> str:
    """The unit a location counts for `file_format` ("line" or "row")."""
    if file_format not in UNITS:
        raise DataError(
            f"unknown data.file_format {file_format!r}; use one of: auto, {', '.join(FILE_FORMATS)}"
        )
    return UNITS[file_format]


def detect_format(path: str | Path) -> str:
    """The file format implied by the extension of `path`."""
    suffix = Path(path).suffix.lower()
    if suffix in EXTENSIONS:
        return EXTENSIONS[suffix]
    supported = ", ".join(EXTENSIONS)
    raise DataError(
        f"cannot tell the file format from the extension {suffix or '(none)'!r}; supported extensions: "
        f"{supported}; rename the file or set data.file_format to one of: {', '.join(FILE_FORMATS)}",
        file=path,
    )


def read_records(path: str | Path, file_format: str = "auto") -> Iterator[SourceRecord]:
    """Yield every record of the file at `path` in file order; raise `DataError` for whole-file problems."""
    path = Path(path)
    _check_path(path)
    fmt = detect_format(path) if file_format == "auto" else file_format
    unit_for(fmt)
    if fmt == "parquet":
        yield from _read_parquet(path)
        return
    text = _read_text(path)
    readers = {"jsonl": _read_jsonl, "json": _read_json, "csv": _read_csv}
    yield from readers[fmt](text, path)


def _check_path(path: Path) -> None:
    if path.is_dir():
        raise DataError(
            f"data.path: {path} is a directory; point data.path at a file inside it {_listing(path)}"
        )
    if not path.is_file():
        raise DataError(f"data.path: file not found: {path}")


def _listing(directory: Path) -> str:
    found = sorted(p.name for p in directory.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)
    if not found:
        return f"(it holds no data files; supported extensions: {', '.join(EXTENSIONS)})"
    shown = ", ".join(found[:_MAX_LISTED])
    more = f" and {len(found) - _MAX_LISTED} more" if len(found) > _MAX_LISTED else ""
    return f"(found: {shown}{more})"


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _encoding_error(path, data, exc) from None
    # A BOM is common in files saved by spreadsheet tools; it is not part of the first field.
    return text.removeprefix("\ufeff")


def _encoding_error(path: Path, data: bytes, exc: UnicodeDecodeError) -> DataError:
    line = data.count(b"\n", 0, exc.start) + 1
    column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
    bad = data[exc.start : exc.start + 1].hex()
    return DataError(
        f"not valid UTF-8: byte 0x{bad} at byte {column} of the line (byte offset {exc.start} in the file); "
        f"re-encode the file as UTF-8, e.g. iconv -f latin1 -t utf-8 '{path}' > fixed{path.suffix}",
        file=path,
        line=line,
    )


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number" if isinstance(value, int | float) else type(value).__name__)


def _as_record(location: int, value: Any) -> SourceRecord:
    if isinstance(value, dict):
        return SourceRecord(location, value, None)
    return SourceRecord(location, None, f"expected a JSON object, got {_json_type(value)}")


def _read_jsonl(text: str, path: Path) -> Iterator[SourceRecord]:
    # Split on "\n" only: str.splitlines would also split on U+2028 and friends inside JSON strings.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            yield SourceRecord(number, None, f"invalid JSON: {exc.msg} (column {exc.colno})")
            continue
        yield _as_record(number, value)


def _read_json(text: str, path: Path) -> Iterator[SourceRecord]:
    if not text.strip():
        return
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"not valid JSON: {exc.msg} (column {exc.colno}); fix the file", path, exc.lineno
        ) from None
    if not isinstance(document, list):
        raise DataError(
            f"expected a JSON list of records ([{{...}}, {{...}}]), got {_json_type(document)}; "
            "wrap the records in a list, or save them one per line as .jsonl",
            file=path,
        )
    yield from _walk_json_list(text)


def _walk_json_list(text: str) -> Iterator[SourceRecord]:
    """Decode a (known valid) JSON list element by element to learn the line each element starts on."""
    decoder = json.JSONDecoder()
    pos = _JSON_WS.match(text, 0).end() + 1  # past the opening "["
    line, counted = 1, 0
    while True:
        pos = _JSON_WS.match(text, pos).end()
        if text[pos] == "]":
            return
        line += text.count("\n", counted, pos)
        counted = pos
        value, pos = decoder.raw_decode(text, pos)
        yield _as_record(line, value)
        pos = _JSON_WS.match(text, pos).end()
        if text[pos] == ",":
            pos += 1


def _read_csv(text: str, path: Path) -> Iterator[SourceRecord]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    last_line = 0
    for fields in reader:
        start, last_line = last_line + 1, reader.line_num
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue  # a blank or whitespace-only line, not a record
        if header is None:
            header = _check_header(fields, path, start)
        elif len(fields) != len(header):
            yield SourceRecord(
                start, None, f"expected {len(header)} fields as in the header, got {len(fields)}"
            )
        else:
            yield SourceRecord(start, dict(zip(header, fields, strict=True)), None)


def _check_header(fields: list[str], path: Path, line: int) -> list[str]:
    seen: set[str] = set()
    for name in fields:
        if name in seen:
            raise DataError(f"duplicate column {name!r} in the header row; rename one of them", path, line)
        seen.add(name)
    return fields


def _read_parquet(path: Path) -> Iterator[SourceRecord]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:  # UnicodeDecodeError: a damaged column name
        raise DataError(
            f"not a readable Parquet file ({exc}); check the file or data.file_format", path
        ) from None
    row = 0
    try:  # a damaged column chunk shows only when it is read, not when the footer is opened
        for batch in parquet.iter_batches(batch_size=1024):
            for record in batch.to_pylist():
                row += 1
                yield SourceRecord(row, record, None)
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:  # bad UTF-8 in a string column: the last
        raise DataError(f"damaged Parquet data after row {row} ({exc}); re-export the file", path) from None
