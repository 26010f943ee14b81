"""Loading whole files: every format gives the same rows, and bad rows are reported or skipped by policy."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from studio_core.data.load import (
    BadRow,
    LoadedData,
    format_bad_rows,
    load_conversations,
    load_records_as_conversations,
)
from studio_core.errors import DataError

ROWS = [
    {"instruction": "Say hi", "input": "", "output": "Hi!"},
    {"instruction": "Add", "input": "2 and 3", "output": "5"},
    {"instruction": "Write\na haiku", "input": "", "output": 'Autumn, "quiet", leaves'},
]
EXPECTED = [
    [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hi!"}],
    [{"role": "user", "content": "Add\n\n2 and 3"}, {"role": "assistant", "content": "5"}],
    [
        {"role": "user", "content": "Write\na haiku"},
        {"role": "assistant", "content": 'Autumn, "quiet", leaves'},
    ],
]


def write(path: Path, rows: list[dict]) -> Path:
    """Write `rows` in the format named by the extension of `path`."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    elif path.suffix == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize(
    ("name", "unit", "locations"),
    [
        ("d.jsonl", "line", [1, 2, 3]),
        ("d.json", "line", [2, 7, 12]),
        ("d.csv", "record", [1, 2, 3]),
        ("d.parquet", "row", [1, 2, 3]),
    ],
)
def test_every_format_loads_the_same_rows(tmp_path: Path, name: str, unit: str, locations: list[int]) -> None:
    path = write(tmp_path / name, ROWS)
    data = load_conversations(path)
    assert data.rows == EXPECTED
    assert data.row_schema == "alpaca"
    assert data.file_format == Path(name).suffix[1:]
    assert data.unit == unit
    assert data.locations == locations
    assert data.bad_rows == []
    assert data.file == str(path)
    assert data.source_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("record", "schema", "expected"),
    [
        (
            {"system": "S", "instruction": "I", "output": "O"},
            "alpaca",
            [("system", "S"), ("user", "I"), ("assistant", "O")],
        ),
        ({"prompt": "P", "completion": "C"}, "prompt_completion", [("user", "P"), ("assistant", "C")]),
        (
            {
                "messages": [
                    {"role": "system", "content": "S"},
                    {"role": "user", "content": "U"},
                    {"role": "assistant", "content": "A"},
                ]
            },
            "messages",
            [("system", "S"), ("user", "U"), ("assistant", "A")],
        ),
        (
            {
                "conversations": [
                    {"from": "system", "value": "S"},
                    {"from": "human", "value": "U"},
                    {"from": "gpt", "value": "A"},
                ]
            },
            "sharegpt",
            [("system", "S"), ("user", "U"), ("assistant", "A")],
        ),
    ],
)
def test_each_schema_detected_and_normalised(
    tmp_path: Path, record: dict, schema: str, expected: list
) -> None:
    data = load_conversations(write(tmp_path / "d.jsonl", [record, record]))
    assert data.row_schema == schema
    assert data.rows == [[{"role": r, "content": c} for r, c in expected]] * 2


def test_column_mapping(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", [{"question": "Q?", "answer": "A."}])
    data = load_conversations(path, columns={"instruction": "question", "output": "answer"})
    assert data.row_schema == "alpaca"
    assert data.rows == [[{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}]]


def test_explicit_schema_skips_detection(tmp_path: Path) -> None:
    path = write(
        tmp_path / "d.jsonl", [{"instruction": "i", "output": "o", "prompt": "p", "completion": "c"}]
    )
    data = load_conversations(path, row_schema="prompt_completion")
    assert data.rows == [[{"role": "user", "content": "p"}, {"role": "assistant", "content": "c"}]]


def test_undetectable_schema_names_file(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", [{"q": "q", "a": "a"}])
    with pytest.raises(DataError, match="data.columns") as info:
        load_conversations(path)
    assert info.value.file == str(path)


def test_csv_with_bom_and_quoted_newline(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    text = 'instruction,output\r\n"Line one\nline two",Done\r\n'
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    data = load_conversations(path)
    assert data.rows == [
        [{"role": "user", "content": "Line one\nline two"}, {"role": "assistant", "content": "Done"}]
    ]


def test_jsonl_bad_json_on_line_7(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    lines = [json.dumps(ROWS[0])] * 6 + ['{"instruction": "x", "output": '] + [json.dumps(ROWS[1])]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_conversations(path)
    message = str(info.value)
    assert f"{path} line 7: invalid JSON" in message
    assert "1 bad row in total" in message
    assert "data.on_bad_rows=skip" in message
    assert info.value.line == 7 and info.value.file == str(path)


def test_csv_empty_field_reported_with_record_and_line(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('instruction,output\n"q\n1",a1\nq2,\nq3,a3\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"record 2 \(line 4\): field 'output' is empty"):
        load_conversations(path)


def test_skip_policy_keeps_good_rows_and_reports_bad(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps(ROWS[0]),
                "not json",
                json.dumps({"instruction": "i", "output": 3}),
                json.dumps(ROWS[1]),
                "",
                json.dumps({"instruction": "i"}),
            ]
        ),
        encoding="utf-8",
    )
    data = load_conversations(path, on_bad_rows="skip")
    assert data.rows == EXPECTED[:2]
    assert data.locations == [1, 4]
    assert [b.location for b in data.bad_rows] == [2, 3, 6]
    assert data.bad_rows[1] == BadRow(3, "field 'output' must be a string, got int", "wrong_type")
    assert data.bad_rows[2] == BadRow(6, "missing required field 'output'", "missing_field")


def test_fail_policy_lists_at_most_ten_rows_and_the_total(tmp_path: Path) -> None:
    rows = [ROWS[0]] * 3 + [{"instruction": "i", "output": ""}] * 12
    path = write(tmp_path / "d.jsonl", rows)
    with pytest.raises(DataError) as info:
        load_conversations(path)
    message = str(info.value)
    listed = [line for line in message.splitlines() if line.startswith(f"{path} line ")]
    assert len(listed) == 10
    assert listed[0] == f"{path} line 4: field 'output' is empty"
    assert listed[-1].startswith(f"{path} line 13:")
    assert "... and 2 more" in message
    assert "12 bad rows in total" in message
    assert "fix these rows, or set data.on_bad_rows=skip to drop them" in message
    assert info.value.line == 4


def test_unknown_role_is_a_bad_row(tmp_path: Path) -> None:
    messages = [{"role": "user", "content": "q"}, {"role": "robot", "content": "t"}]
    good = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    path = write(tmp_path / "d.jsonl", [{"messages": good}, {"messages": messages}])
    data = load_conversations(path, on_bad_rows="skip")
    assert data.bad_rows == [BadRow(
        2, "unknown role 'robot' in message 2; allowed: system, developer, user, assistant, tool, function",
        "unknown_role")]


def test_parquet_bad_row_numbers(tmp_path: Path) -> None:
    rows = [{"prompt": "p", "completion": "c"}] * 4 + [{"prompt": "p", "completion": None}]
    path = write(tmp_path / "d.parquet", rows)
    with pytest.raises(DataError) as info:
        load_conversations(path)
    assert f"{path} row 5: field 'completion' must be a string, got null" in str(info.value)
    assert info.value.line == 5


def test_all_rows_bad_with_skip(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", [{"instruction": "i", "output": ""}] * 3)
    with pytest.raises(DataError, match="all 3 rows of .* are bad") as info:
        load_conversations(path, on_bad_rows="skip")
    assert "line 1: field 'output' is empty" in str(info.value)


def test_all_rows_unparseable(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("nope\n[1]\n", encoding="utf-8")
    with pytest.raises(DataError, match="all 2 rows"):
        load_conversations(path, on_bad_rows="skip")


@pytest.mark.parametrize(
    ("name", "content"),
    [("d.jsonl", b""), ("d.jsonl", b"\n  \n\n"), ("d.json", b"[]"), ("d.json", b" "), ("d.csv", b"a,b\n")],
)
def test_empty_dataset(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        load_conversations(path)
    assert (
        str(info.value)
        == f"{path}: no rows found; the dataset is empty; add rows or point data.path at another file"
    )


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data.path: file not found"):
        load_conversations(tmp_path / "missing.jsonl")


def test_directory(tmp_path: Path) -> None:
    write(tmp_path / "a.jsonl", ROWS)
    with pytest.raises(
        DataError, match=r"is a directory; point data.path at a file inside it \(found: a.jsonl\)"
    ):
        load_conversations(tmp_path)


def test_non_utf8_byte_on_line_3(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(b"instruction,output\nq,a\nq\xff,a\n")
    with pytest.raises(DataError) as info:
        load_conversations(path)
    assert str(info.value).startswith(f"{path} line 3: not valid UTF-8")


def test_bad_options() -> None:
    with pytest.raises(DataError, match="data.on_bad_rows"):
        load_records_as_conversations(ROWS, on_bad_rows="ignore")
    with pytest.raises(DataError, match="data.row_schema"):
        load_records_as_conversations(ROWS, row_schema="dolly")


def test_in_memory_records_share_validation() -> None:
    data = load_records_as_conversations(ROWS, "auto", None, "demo")
    assert isinstance(data, LoadedData)
    assert (data.file, data.file_format, data.unit, data.row_schema) == ("demo", "records", "row", "alpaca")
    assert data.rows == EXPECTED and data.locations == [1, 2, 3]
    reordered = [{key: row[key] for key in reversed(list(row))} for row in ROWS]
    assert load_records_as_conversations(reordered, name="demo").source_sha256 == data.source_sha256
    assert load_records_as_conversations(ROWS[:2], name="demo").source_sha256 != data.source_sha256
    with pytest.raises(DataError, match="demo row 2: field 'output' is empty"):
        load_records_as_conversations([ROWS[0], {"instruction": "i", "output": ""}], name="demo")


def test_format_bad_rows() -> None:
    bad = [BadRow(i, f"reason {i}") for i in range(1, 4)]
    assert format_bad_rows("f.csv", "line", bad, limit=2) == (
        "f.csv line 1: reason 1\nf.csv line 2: reason 2\n... and 1 more\n3 bad rows in total"
    )
    assert format_bad_rows("f.pq", "row", bad[:1]) == "f.pq row 1: reason 1\n1 bad row in total"
