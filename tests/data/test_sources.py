"""Reading raw records from JSONL, JSON, CSV and Parquet files, with their locations and whole-file errors."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from studio_core.data.sources import SourceRecord, detect_format, read_records, unit_for
from studio_core.errors import DataError, InputError

ROWS = [
    {"instruction": "Say hi", "input": "", "output": "Hi!"},
    {"instruction": "Add", "input": "2 and 3", "output": "5"},
    {"instruction": "Translate 'chat'", "input": "", "output": "cat"},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_detect_format_by_extension() -> None:
    assert detect_format("a.jsonl") == "jsonl"
    assert detect_format("a.NDJSON") == "jsonl"
    assert detect_format("a.json") == "json"
    assert detect_format("a.csv") == "csv"
    assert detect_format("a.parquet") == "parquet"
    assert detect_format("a.pq") == "parquet"


def test_detect_format_unknown_extension_names_file_and_override() -> None:
    with pytest.raises(DataError) as info:
        detect_format("data/train.txt")
    message = str(info.value)
    assert "train.txt" in message
    assert ".jsonl" in message and ".parquet" in message
    assert "data.file_format" in message
    assert isinstance(info.value, InputError)


def test_unit_for_each_format() -> None:
    assert [unit_for(f) for f in ("jsonl", "json", "csv", "parquet", "arrow")] == [
        "line", "line", "record", "row", "row"]
    with pytest.raises(DataError, match="data.file_format"):
        unit_for("xml")


def test_jsonl_locations_skip_blank_lines_and_flag_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n\n   \n{"a": 2}\n{oops\n[1, 2]\n', encoding="utf-8")
    records = list(read_records(path))
    assert [r.location for r in records] == [1, 4, 5, 6]
    assert records[0] == SourceRecord(1, {"a": 1}, None)
    assert records[2].record is None and records[2].error.startswith("invalid JSON: ")
    assert records[3].error == "expected a JSON object, got list"


def test_jsonl_keeps_unicode_line_separator_inside_strings(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": "x\u2028y"}\n{"a": "z"}\n', encoding="utf-8")
    records = list(read_records(path))
    assert [r.record for r in records] == [{"a": "x\u2028y"}, {"a": "z"}]


def test_json_list_locations_are_start_lines(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('[\n  {"a": 1},\n\n  {\n    "a": 2\n  },\n  3\n]\n', encoding="utf-8")
    records = list(read_records(path))
    assert [r.location for r in records] == [2, 4, 7]
    assert [r.record for r in records[:2]] == [{"a": 1}, {"a": 2}]
    assert records[2].error == "expected a JSON object, got number"


def test_json_not_a_list_is_a_file_error(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('"just a string"', encoding="utf-8")
    with pytest.raises(DataError, match="expected a JSON list of records") as info:
        list(read_records(path))
    assert str(path) in str(info.value)


def test_json_invalid_reports_line(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('[\n  {"a": 1},\n  {"a": }\n]\n', encoding="utf-8")
    with pytest.raises(DataError) as info:
        list(read_records(path))
    assert info.value.line == 3
    assert f"{path} line 3" in str(info.value)


def test_csv_with_bom_and_quoted_newline(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    text = 'instruction,output\r\n"Write\na poem",Roses\r\nSay hi,Hi\r\n'
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    records = list(read_records(path))
    assert records == [  # CSV locations are record numbers; the start line rides beside them
        SourceRecord(1, {"instruction": "Write\na poem", "output": "Roses"}, None, 2),
        SourceRecord(2, {"instruction": "Say hi", "output": "Hi"}, None, 4),
    ]


def test_csv_wrong_field_count_and_empty_values(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("a,b\n1,2\n1,2,3\n,\n", encoding="utf-8")
    records = list(read_records(path))
    assert records[0].record == {"a": "1", "b": "2"}
    assert (
        records[1].location == 2 and records[1].line == 3
        and "expected 2 fields" in records[1].error and "got 3" in records[1].error
    )
    assert records[2].record == {"a": "", "b": ""}


def test_csv_header_only_yields_nothing(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("instruction,output\n", encoding="utf-8")
    assert list(read_records(path)) == []


def test_csv_duplicate_header_column(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("a,a\n1,2\n", encoding="utf-8")
    with pytest.raises(DataError, match="duplicate column 'a'") as info:
        list(read_records(path))
    assert info.value.line == 1


def test_parquet_row_numbers_and_python_values(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    table = pa.Table.from_pylist(
        [{"a": i, "msgs": [{"role": "user", "content": str(i)}]} for i in range(2500)]
    )
    pq.write_table(table, path, row_group_size=1000)
    records = list(read_records(path))
    assert [r.location for r in records] == list(range(1, 2501))
    assert records[1234].record == {"a": 1234, "msgs": [{"role": "user", "content": "1234"}]}


def test_parquet_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="not a readable Parquet file") as info:
        list(read_records(path))
    assert info.value.file == str(path)


def test_explicit_format_overrides_extension(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.txt", ROWS)
    assert [r.record for r in read_records(path, "jsonl")] == ROWS


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.jsonl"
    with pytest.raises(DataError, match=r"data\.path: file not found: .*nope\.jsonl"):
        list(read_records(path))


def test_directory_lists_data_files(tmp_path: Path) -> None:
    (tmp_path / "b.csv").write_text("x\n", encoding="utf-8")
    (tmp_path / "a.jsonl").write_text("{}\n", encoding="utf-8")
    (tmp_path / "notes.md").write_text("hi", encoding="utf-8")
    with pytest.raises(DataError) as info:
        list(read_records(tmp_path))
    message = str(info.value)
    assert "is a directory" in message and "point data.path at a file inside it" in message
    assert "(found: a.jsonl, b.csv)" in message
    assert "notes.md" not in message


def test_directory_listing_is_capped(tmp_path: Path) -> None:
    for i in range(13):
        (tmp_path / f"f{i:02d}.jsonl").write_text("{}\n", encoding="utf-8")
    with pytest.raises(DataError, match="and 3 more"):
        list(read_records(tmp_path))


def test_non_utf8_names_line_and_offset(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"a": "1"}\n{"a": "2"}\n{"a": "caf\xe9"}\n')
    with pytest.raises(DataError) as info:
        list(read_records(path))
    message = str(info.value)
    assert f"{path} line 3" in message
    assert info.value.line == 3
    assert "0xe9" in message and "byte offset 32" in message and "byte 11 of the line" in message
    assert "iconv" in message


@pytest.mark.parametrize("content", [b"", b"  \n\n  "])
@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_empty_text_files_yield_nothing(tmp_path: Path, suffix: str, content: bytes) -> None:
    path = tmp_path / f"d{suffix}"
    path.write_bytes(content)
    assert list(read_records(path)) == []
