"""The files people really have: one small fixture per dialect, each normalised to the internal form."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from studio_core.data.load import load_conversations
from studio_core.data.schemas import RowError, detect_layout, normalise_record
from studio_core.errors import DataError

FIXTURES = Path(__file__).parent / "fixtures"


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def bot(text: str) -> dict:
    return {"role": "assistant", "content": text}


def call(name: str, **arguments) -> dict:
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


def test_alpaca_history_becomes_earlier_turns() -> None:
    data = load_conversations(FIXTURES / "alpaca_history.json")
    assert data.row_schema == "alpaca"
    assert data.rows[0] == [
        {"role": "system", "content": "You translate greetings."},
        user("Say hello in French."), bot("Bonjour."),
        user("And in German?"), bot("Hallo."),
        user("And in Spanish?"), bot("Hola."),
    ]
    assert data.rows[1] == [user("Say hi"), bot("Hi!")]


@pytest.mark.parametrize(("history", "code"), [
    ("not a list", "bad_history"),
    ([["only one"]], "bad_history"),
    ([["q", ""]], "empty_turn"),
])
def test_bad_history_is_refused_with_its_pair(history, code: str) -> None:
    with pytest.raises(RowError) as info:
        normalise_record({"instruction": "i", "output": "o", "history": history}, "alpaca")
    assert info.value.code == code and "history" in info.value.reason


def test_sharegpt_tools_dialect() -> None:
    data = load_conversations(FIXTURES / "sharegpt_tools.json")
    assert data.row_schema == "sharegpt" and data.bad_rows == []
    first = data.rows[0]
    assert first[0]["role"] == "system" and first[0]["content"] == ""
    assert first[0]["tools"][0]["type"] == "function"
    assert first[0]["tools"][0]["function"]["name"] == "get_weather"
    assert first[1:] == [
        user("What is the weather in Paris?"),
        {"role": "assistant", "content": "", "tool_calls": [call("get_weather", city="Paris")]},
        {"role": "tool", "content": '{"temperature_c": 18, "sky": "cloudy"}'},
        bot("It is 18 degrees and cloudy in Paris."),
    ]
    joke = "Why did the chicken cross the road? To get to the other side."
    assert data.rows[1] == [user("Tell me a joke."), bot(joke)]


def test_openai_tools_dialect_string_and_object_arguments() -> None:
    data = load_conversations(FIXTURES / "openai_tools.jsonl")
    assert data.row_schema == "messages" and data.bad_rows == []
    first, second = data.rows
    assert first[0]["content"] == "You are a banking assistant."
    assert first[0]["tools"][0]["function"]["name"] == "get_balance"
    assert first[2] == {"role": "assistant", "content": "",
                        "tool_calls": [{**call("get_balance", account=42), "id": "call_1"}]}
    assert first[3] == {"role": "tool", "content": '{"balance": 1234.5}', "tool_call_id": "call_1"}
    assert second[2]["tool_calls"] == [call("convert", value=3, unit="km"), call("convert", value=5, unit="kg")]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "tool", "tool", "assistant"]


def test_both_dialects_reach_the_same_internal_form() -> None:
    openai = {"messages": [user("q"), {"role": "assistant", "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}]},
        {"role": "tool", "content": "r"}, bot("a")], "tools": [{"type": "function", "function": {"name": "f"}}]}
    sharegpt = {"conversations": [{"from": "human", "value": "q"},
                                  {"from": "function_call", "value": '{"name": "f", "arguments": {"x": 1}}'},
                                  {"from": "observation", "value": "r"}, {"from": "gpt", "value": "a"}],
                "tools": '[{"name": "f"}]'}
    assert normalise_record(openai, "messages") == normalise_record(sharegpt, "sharegpt")


@pytest.mark.parametrize(("record", "schema", "words"), [
    ({"messages": [user("q"), {"role": "assistant", "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]}, "messages", "not valid JSON"),
    ({"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": "f(x=1)"}]},
     "sharegpt", "not valid JSON"),
    ({"messages": [user("q"), bot("a")], "tools": "[{"}, "messages", "field 'tools'"),
    ({"messages": [user("q"), bot("a")], "tools": [{"description": "no name"}]}, "messages", "has no 'name'"),
])
def test_unreadable_tool_calls_are_refused_naming_the_field(record: dict, schema: str, words: str) -> None:
    with pytest.raises(RowError) as info:
        normalise_record(record, schema)
    assert words in info.value.reason and info.value.code in ("bad_tool_call", "bad_tools")


def test_content_parts_joined_and_non_text_refused() -> None:
    data = load_conversations(FIXTURES / "content_parts.jsonl", on_bad_rows="skip")
    assert data.rows == [[user("Name a prime\nbelow ten."), bot("Seven.")], [user("Name a colour."), bot("Blue.")]]
    (bad,) = data.bad_rows
    assert (bad.location, bad.code) == (3, "non_text_part")
    assert "message 1 part 1 is of type 'image_url'" in bad.reason and "text models" in bad.reason


def test_text_rows_detected() -> None:
    data = load_conversations(FIXTURES / "text_rows.jsonl")
    assert data.row_schema == "text"
    assert data.rows[1] == [{"role": "text", "content": "A second, short document."}]


def test_one_json_object_is_one_record() -> None:
    data = load_conversations(FIXTURES / "one_conversation.json")
    assert data.row_schema == "messages" and len(data.rows) == 1 and data.locations == [1]
    assert data.notes == ["one_conversation.json holds one JSON object: read as a single record"]


def test_one_json_object_with_a_list_field_holds_the_records() -> None:
    data = load_conversations(FIXTURES / "wrapped_records.json")
    assert data.rows == [[user("First?"), bot("One.")], [user("Second?"), bot("Two.")]]
    assert data.locations == [4, 5]  # the line each record starts on
    assert "records read from its list field 'data'" in data.notes[0]


def test_one_json_object_with_two_record_lists_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"train": [{"a": 1}], "test": [{"a": 2}]}), encoding="utf-8")
    with pytest.raises(DataError, match="several lists of records \\('train', 'test'\\)"):
        load_conversations(path)


def test_prompt_response_system_prompt_parquet_is_mapped_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    rows = [{"prompt": "Q1", "response": "A1", "system_prompt": "S"}, {"prompt": "Q2", "response": "A2",
                                                                       "system_prompt": None}]
    pq.write_table(pa.Table.from_pylist(rows), path)
    data = load_conversations(path)
    assert data.columns == {"instruction": "prompt", "output": "response", "system": "system_prompt"}
    assert data.columns_guessed
    assert data.rows == [[{"role": "system", "content": "S"}, user("Q1"), bot("A1")], [user("Q2"), bot("A2")]]


@pytest.mark.parametrize(("keys", "mapping"), [
    ({"question", "answer"}, {"instruction": "question", "output": "answer"}),
    ({"query", "response"}, {"instruction": "query", "output": "response"}),
    ({"input", "output"}, {"instruction": "input", "output": "output"}),
    ({"input", "completion"}, {"instruction": "input", "output": "completion"}),
    ({"instruction", "context", "response"}, {"instruction": "instruction", "output": "response", "input": "context"}),
])
def test_column_aliases(keys: set, mapping: dict) -> None:
    assert detect_layout([dict.fromkeys(keys, "x")]) == ("alpaca", mapping)


def test_ambiguous_aliases_refused_listing_candidates() -> None:
    with pytest.raises(DataError) as info:
        load_conversations(FIXTURES / "ambiguous_columns.csv")
    message = str(info.value)
    assert "candidates response, answer" in message and 'data.columns={"output": "response"}' in message
    assert "ambiguous_columns.csv" in message


def test_explicit_columns_win_over_aliases() -> None:
    data = load_conversations(FIXTURES / "ambiguous_columns.csv",
                              columns={"instruction": "question", "output": "response"})
    assert data.rows == [[user("What is 2+2?"), bot("four")]] and not data.columns_guessed


def test_a_tool_reply_without_a_call_is_refused() -> None:
    record = {"messages": [user("q"), {"role": "tool", "content": "r"}, bot("a")]}
    with pytest.raises(RowError) as info:
        normalise_record(record, "messages")
    assert info.value.code == "orphan_tool_reply" and "message 2 is a tool reply" in info.value.reason


def test_a_system_field_beside_a_different_system_message_is_refused() -> None:
    record = {"conversations": [{"from": "system", "value": "A"}, {"from": "human", "value": "q"},
                                {"from": "gpt", "value": "a"}], "system": "B"}
    with pytest.raises(RowError) as info:
        normalise_record(record, "sharegpt")
    assert info.value.code == "two_systems"
    record["system"] = "A"
    assert normalise_record(record, "sharegpt")[0] == {"role": "system", "content": "A"}
