"""Read raw records from local data (a JSONL, JSON, CSV or Parquet file, or a Hugging Face dataset folder).

Whole-file problems raise `DataError`; a problem with one record is reported on that record
(`SourceRecord.error`) so the loader can list every bad row at once.

A record's location counts what the user can find it by: the line for JSONL and JSON (where the record
starts), the record number for CSV (a quoted field may span lines; the start line is kept beside it),
the row for Parquet and Arrow (counted across all shards, in file order). Local Hugging Face datasets are
folders (`hf_datasets.py`): a `save_to_disk` folder, Parquet shards laid out as a Hub dataset repo, or an
`hf:<org>/<name>` id found in the local Hub cache.
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

FILE_FORMATS = ("jsonl", "json", "csv", "parquet", "arrow")

# What a record's `location` counts in each format (see the module docstring).
UNITS: dict[str, str] = {"jsonl": "line", "json": "line", "csv": "record", "parquet": "row", "arrow": "row"}

EXTENSIONS: dict[str, str] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".arrow": "arrow",
}

_MAX_LISTED = 10
_JSON_WS = re.compile(r"[ \t\n\r]*")


@dataclass(frozen=True)
class SourceRecord:
    """One raw record: where it starts, and either the record or why it could not be read."""

    location: int
    record: dict | None
    error: str | None
    line: int | None = None  # the physical start line where `location` is not one (CSV records)


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


def read_records(
    path: str | Path, file_format: str = "auto", notes: list[str] | None = None
) -> Iterator[SourceRecord]:
    """Yield every record of the data at `path` in file order; raise `DataError` for whole-file problems.

    `path` may also be a Hugging Face dataset folder or `hf:<org>/<name>`; what was read from where is
    appended to `notes` (e.g. the split chosen, or the JSON field the records came from).
    """
    notes = notes if notes is not None else []
    files, fmt = locate(path, file_format, notes)
    yield from read_files(files, fmt, notes)


def read_files(files: list[Path], fmt: str, notes: list[str]) -> Iterator[SourceRecord]:
    """Yield the records of `files` (what `locate` found) in order."""
    if fmt in ("parquet", "arrow"):
        yield from _read_tables(files, fmt)
        return
    (file,) = files
    text = _read_text(file)
    if fmt == "json":
        yield from _read_json(text, file, notes)
        return
    readers = {"jsonl": _read_jsonl, "csv": _read_csv}
    yield from readers[fmt](text, file)


def locate(path: str | Path, file_format: str = "auto", notes: list[str] | None = None) -> tuple[list[Path], str]:
    """The files to read for `path` (a file, a dataset folder or an `hf:` id) and their format."""
    from studio_core.data.hf_datasets import is_dataset_folder, resolve_dataset_folder, resolve_hub_id

    notes = notes if notes is not None else []
    if str(path).startswith("hf:"):
        path = resolve_hub_id(str(path)[3:], notes)
    path = Path(path)
    if path.is_dir() and is_dataset_folder(path):
        files, fmt = resolve_dataset_folder(path, notes)
        if file_format not in ("auto", fmt):
            raise DataError(f"data.file_format={file_format} but the folder holds {fmt} files; "
                            "set data.file_format=auto", file=path)
        return files, fmt
    _check_path(path)
    fmt = detect_format(path) if file_format == "auto" else file_format
    unit_for(fmt)
    return [path], fmt


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


# A JSON object with one of these keys is one record, not a wrapper around a list of records.
RECORD_KEYS = ("messages", "conversations", "instruction", "prompt", "text", "output", "completion")


def _read_json(text: str, path: Path, notes: list[str]) -> Iterator[SourceRecord]:
    if not text.strip():
        return
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"not valid JSON: {exc.msg} (column {exc.colno}); fix the file", path, exc.lineno
        ) from None
    if isinstance(document, list):
        yield from _walk_json_list(text, _JSON_WS.match(text, 0).end())
        return
    if not isinstance(document, dict):
        raise DataError(
            f"expected a JSON list of records ([{{...}}, {{...}}]), got {_json_type(document)}; "
            "wrap the records in a list, or save them one per line as .jsonl",
            file=path,
        )
    field = _records_field(document, path)
    if field is None:
        notes.append(f"{path.name} holds one JSON object: read as a single record")
        yield SourceRecord(1 + text.count("\n", 0, _JSON_WS.match(text, 0).end()), document, None)
        return
    notes.append(f"{path.name} holds one JSON object: records read from its list field {field!r}")
    yield from _walk_json_list(text, _field_position(text, field))


def _records_field(document: dict, path: Path) -> str | None:
    """The one list-of-objects field holding the records, or None when the object is itself a record."""
    if any(key in document for key in RECORD_KEYS):
        return None
    fields = [key for key, value in document.items()
              if isinstance(value, list) and value and all(isinstance(v, dict) for v in value)]
    if len(fields) > 1:
        raise DataError(
            f"the file holds one JSON object with several lists of records ({', '.join(map(repr, fields))}); "
            "save the records you mean as a JSON list or as .jsonl",
            file=path,
        )
    return fields[0] if fields else None


def _field_position(text: str, field: str) -> int:
    """Where the value of top-level `field` starts in the (known valid) JSON object `text`."""
    decoder = json.JSONDecoder()
    pos = _JSON_WS.match(text, 0).end() + 1  # past the opening "{"
    while True:
        pos = _JSON_WS.match(text, pos).end()
        key, pos = decoder.raw_decode(text, pos)
        pos = _JSON_WS.match(text, pos).end() + 1  # past the ":"
        pos = _JSON_WS.match(text, pos).end()
        if key == field:
            return pos
        _, pos = decoder.raw_decode(text, pos)
        pos = _JSON_WS.match(text, pos).end() + 1  # past the ","


def _walk_json_list(text: str, start: int) -> Iterator[SourceRecord]:
    """Decode a (known valid) JSON list starting at `start` element by element, with each one's start line."""
    decoder = json.JSONDecoder()
    pos = start + 1  # past the opening "["
    line, counted = 1 + text.count("\n", 0, start), start
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
    last_line, number = 0, 0
    for fields in reader:
        start, last_line = last_line + 1, reader.line_num
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue  # a blank or whitespace-only line, not a record
        if header is None:
            header = _check_header(fields, path, start)
            continue
        number += 1
        if len(fields) != len(header):
            yield SourceRecord(
                number, None, f"expected {len(header)} fields as in the header, got {len(fields)}", start
            )
        else:
            yield SourceRecord(number, dict(zip(header, fields, strict=True)), None, start)


def _check_header(fields: list[str], path: Path, line: int) -> list[str]:
    seen: set[str] = set()
    for name in fields:
        if name in seen:
            raise DataError(f"duplicate column {name!r} in the header row; rename one of them", path, line)
        seen.add(name)
    return fields


def _read_tables(files: list[Path], fmt: str) -> Iterator[SourceRecord]:
    """Parquet files or Arrow stream files (`datasets.save_to_disk`), rows numbered across all of them."""
    import pyarrow as pa

    row = 0
    for path in files:
        batches = _batches(path, fmt)  # opening the file (its footer or schema) fails here: not readable
        try:  # a damaged column chunk shows only when it is read, not when the footer is opened
            for batch in batches:
                for record in batch.to_pylist():
                    row += 1
                    yield SourceRecord(row, record, None)
        except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:  # bad UTF-8 in a string column: the last
            raise DataError(f"damaged {_NAMES[fmt]} data after row {row} ({exc}); re-export the file", path) from None


_NAMES = {"parquet": "Parquet", "arrow": "Arrow"}


def _batches(path: Path, fmt: str) -> Iterator[Any]:
    """The record batches of one file; `DataError` now if the file cannot even be opened."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:  # UnicodeDecodeError: a damaged column name
        if fmt == "parquet":
            return pq.ParquetFile(path).iter_batches(batch_size=1024)
        source = pa.memory_map(str(path))
        try:
            return iter(pa.ipc.open_stream(source))
        except pa.ArrowInvalid:  # the Arrow file (random access) format, not the stream one
            reader = pa.ipc.open_file(source)
            return (reader.get_batch(i) for i in range(reader.num_record_batches))
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        raise DataError(
            f"not a readable {_NAMES[fmt]} file ({exc}); check the file or data.file_format", path
        ) from None
