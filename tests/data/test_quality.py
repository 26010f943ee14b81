"""The quality section of the data report: errors follow data.on_bad_rows, warnings never block, records listed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studio_core.config import DataConfig
from studio_core.data.prepare import prepare_data
from studio_core.data.quality import RECORDS_CAP
from studio_core.errors import DataError
from studio_core.models.tiny import build_byte_tokenizer

FIXTURES = Path(__file__).parent / "fixtures"
KEYS = {"level", "code", "message", "count", "records"}


def prepare(path: Path, **data) -> dict:
    tokenizer = build_byte_tokenizer()
    return prepare_data(DataConfig(path=str(path), **data), lambda: tokenizer).report


def by_code(report: dict) -> dict[str, dict]:
    items = report["quality"]
    assert all(set(item) == KEYS for item in items)  # the shape the step 1 page renders
    assert all(item["level"] in ("error", "warning") for item in items)
    return {item["code"]: item for item in items}


def test_defects_fail_by_default_listing_every_bad_row() -> None:
    with pytest.raises(DataError) as info:
        prepare(FIXTURES / "defects.jsonl")
    message = str(info.value)
    assert "defects.jsonl line 4: message 2 content is empty" in message
    assert "line 7: message 2 tool call 1 (f): 'arguments' is not valid JSON" in message
    assert "line 9: message 1 part 1 is of type 'input_audio'" in message
    assert "3 bad rows in total" in message


def test_defects_with_skip_are_errors_and_warnings_with_records() -> None:
    items = by_code(prepare(FIXTURES / "defects.jsonl", on_bad_rows="skip", val_fraction=0.2))
    assert {code: items[code]["level"] for code in items} == {
        "empty_turn": "error", "bad_tool_call": "error", "non_text_part": "error",
        "duplicate": "warning", "no_user_turn": "warning", "assistant_first": "warning",
        "placeholder": "warning", "near_duplicate": "warning",
    }
    assert {code: items[code]["records"] for code in items} == {
        "empty_turn": [4], "bad_tool_call": [7], "non_text_part": [9], "duplicate": [8], "no_user_turn": [2],
        "assistant_first": [3], "placeholder": [1], "near_duplicate": [6],
    }
    assert all(item["count"] == 1 for item in items.values())
    assert "data.on_bad_rows=skip" in items["non_text_part"]["message"]
    assert "text models" in items["non_text_part"]["message"]


def test_over_max_length_counts_the_tokens_lost(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    rows = [{"prompt": f"q{i}", "completion": "x" * (10 if i % 2 else 200)} for i in range(6)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    report = prepare(path, max_length=64)
    item = by_code(report)["over_max_length"]
    assert item["records"] == [1, 3, 5] and item["count"] == 3
    tokens = build_byte_tokenizer().apply_chat_template(
        [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "x" * 200}],
        tokenize=True, return_dict=False)
    assert f"{3 * (len(tokens) - 64):,} tokens cut off" in item["message"]


def test_records_are_capped_but_count_is_not(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    rows = [{"messages": [{"role": "assistant", "content": f"hi {i}"}]} for i in range(RECORDS_CAP + 5)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    item = by_code(prepare(path))["no_user_turn"]
    assert item["count"] == RECORDS_CAP + 5 and len(item["records"]) == RECORDS_CAP


def test_guessed_columns_and_plain_text_tools_are_reported() -> None:
    report = prepare(FIXTURES / "sharegpt_tools.json", val_fraction=0.5)
    assert report["rendering"]["mode"] == "plain_text_tools" and report["rendering"]["tool_rows"] == 1
    assert "<tool_call>" in report["rendering"]["example"]
    assert by_code(report)["tools_plain_text"]["records"] == [2]
    assert report["train_on"] == "all_assistant"


def test_text_rows_are_packed_and_reported(tmp_path: Path) -> None:
    report = prepare(FIXTURES / "text_rows.jsonl", val_fraction=0.3, max_length=128)
    assert report["rendering"]["mode"] == "text"
    assert report["rendering"]["packing"]["train"] == {"rows": 2, "examples": 1}
    assert report["tokens"]["train"]["no_supervised_tokens"] == 0


def test_prompt_response_mapping_is_a_warning_and_in_the_source(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"question": f"q{i}", "answer": f"a{i}"}) + "\n" for i in range(4)))
    report = prepare(path)
    item = by_code(report)["columns_guessed"]
    assert item["count"] == 4 and "question -> instruction, answer -> output" in item["message"]
    assert report["sources"][0]["columns"] == {"instruction": "question", "output": "answer"}


def test_csv_refusals_name_the_record_and_its_line(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('instruction,output\n"multi\nline",a\nq2,\nq3,a3\nq4,a4\n', encoding="utf-8")
    report = prepare(path, on_bad_rows="skip", val_fraction=0.34)
    assert report["sources"][0]["bad_rows"] == [
        {"record": 2, "line": 4, "reason": "field 'output' is empty", "code": "empty_turn"}]
    item = by_code(report)["empty_turn"]
    assert item["records"] == [2] and "record 2: field 'output' is empty" in item["message"]
