"""Schema detection and normalisation of each row schema to chat messages."""

from __future__ import annotations

import pytest

from studio_core.data.schemas import ROW_SCHEMAS, RowError, apply_columns, detect_schema, normalise_record
from studio_core.errors import DataError, StudioError


def sys_msg(text: str) -> dict:
    return {"role": "system", "content": text}


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def bot(text: str) -> dict:
    return {"role": "assistant", "content": text}


def test_row_schemas() -> None:
    assert ROW_SCHEMAS == ("alpaca", "prompt_completion", "messages", "sharegpt", "text")


@pytest.mark.parametrize(
    ("record", "schema"),
    [
        ({"instruction": "i", "input": "", "output": "o"}, "alpaca"),
        ({"prompt": "p", "completion": "c"}, "prompt_completion"),
        ({"messages": [], "id": 3}, "messages"),
        ({"conversations": []}, "sharegpt"),
    ],
)
def test_detect_schema(record: dict, schema: str) -> None:
    assert detect_schema([record]) == schema


def test_detect_schema_uses_column_mapping() -> None:
    records = [{"question": "q", "answer": "a"}]
    assert detect_schema(records, {"instruction": "question", "output": "answer"}) == "alpaca"


def test_detect_schema_failure_explains_fix() -> None:
    with pytest.raises(DataError) as info:
        detect_schema([{"q": "q", "a": "a"}], file="train.jsonl")
    message = str(info.value)
    assert message.startswith("train.jsonl: ")
    assert "(a, q)" in message
    assert "alpaca needs instruction + output" in message
    assert "prompt_completion needs prompt + completion" in message
    assert "messages needs messages" in message and "sharegpt needs conversations" in message
    assert "data.row_schema" in message and 'data.columns={"instruction": "question"' in message


def test_apply_columns_renames_and_rejects_unknown_fields() -> None:
    mapped = apply_columns({"q": "x", "a": "y", "other": 1}, {"prompt": "q", "completion": "a"})
    assert mapped == {"prompt": "x", "completion": "y", "other": 1}
    with pytest.raises(DataError, match="data.columns: unknown field"):
        apply_columns({"q": "x"}, {"question": "q"})


def test_alpaca_with_input_and_system() -> None:
    record = {"instruction": "Add", "input": "2 and 3", "output": "5", "system": "Be terse."}
    assert normalise_record(record, "alpaca") == [sys_msg("Be terse."), user("Add\n\n2 and 3"), bot("5")]


@pytest.mark.parametrize("extra", [{}, {"input": ""}, {"input": None}, {"input": "  ", "system": ""}])
def test_alpaca_without_input(extra: dict) -> None:
    record = {"instruction": "Say hi", "output": "Hi!", **extra}
    assert normalise_record(record, "alpaca") == [user("Say hi"), bot("Hi!")]


def test_alpaca_with_column_mapping() -> None:
    record = {"question": "Q?", "answer": "A."}
    columns = {"instruction": "question", "output": "answer"}
    assert normalise_record(record, "alpaca", columns) == [user("Q?"), bot("A.")]


def test_prompt_completion() -> None:
    assert normalise_record({"prompt": "p", "completion": "c"}, "prompt_completion") == [user("p"), bot("c")]


def test_messages_keep_system_and_map_developer() -> None:
    record = {
        "messages": [
            {"role": "developer", "content": "rules"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello", "name": "x"},
        ]
    }
    assert normalise_record(record, "messages") == [sys_msg("rules"), user("hi"), bot("hello")]


def test_sharegpt_roles() -> None:
    record = {
        "conversations": [
            {"from": "system", "value": "sys"},
            {"from": "human", "value": "q1"},
            {"from": "gpt", "value": "a1"},
            {"from": "user", "value": "q2"},
            {"from": "chatgpt", "value": "a2"},
        ]
    }
    expected = [sys_msg("sys"), user("q1"), bot("a1"), user("q2"), bot("a2")]
    assert normalise_record(record, "sharegpt") == expected


def test_sharegpt_accepts_role_content_spelling() -> None:
    record = {"conversations": [{"role": "user", "content": "q"}, {"role": "model", "content": "a"}]}
    assert normalise_record(record, "sharegpt") == [user("q"), bot("a")]


def reason(record: dict, schema: str, columns: dict | None = None) -> str:
    with pytest.raises(RowError) as info:
        normalise_record(record, schema, columns)
    return info.value.reason


def test_row_error_is_not_a_studio_error() -> None:
    assert not issubclass(RowError, StudioError)


def test_unknown_role() -> None:
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a"},
        {"role": "robot", "content": "t"},
    ]
    assert reason({"messages": messages}, "messages") == (
        "unknown role 'robot' in message 3; allowed: system, developer, user, assistant, tool, function"
    )
    assert "unknown role 'robot' in message 1" in reason(
        {"conversations": [{"from": "robot", "value": "x"}]}, "sharegpt"
    )


def test_missing_and_empty_fields() -> None:
    assert reason({"instruction": "i"}, "alpaca") == "missing required field 'output'"
    assert reason({"instruction": "  ", "output": "o"}, "alpaca") == "field 'instruction' is empty"
    assert reason({"prompt": "", "completion": "c"}, "prompt_completion") == "field 'prompt' is empty"
    assert reason({"messages": []}, "messages") == "field 'messages' is empty"


def test_missing_mapped_field_is_reported_by_canonical_name() -> None:
    columns = {"instruction": "question", "output": "answer"}
    assert reason({"question": "q"}, "alpaca", columns) == "missing required field 'output'"


def test_wrong_types() -> None:
    assert reason({"instruction": "i", "output": 5}, "alpaca") == "field 'output' must be a string, got int"
    assert (
        reason({"instruction": "i", "output": ["o"]}, "alpaca") == "field 'output' must be a string, got list"
    )
    assert reason({"instruction": "i", "input": 3, "output": "o"}, "alpaca") == (
        "field 'input' must be a string, got int"
    )
    assert "must be a list of message objects, got str" in reason({"messages": "hi"}, "messages")
    assert reason({"messages": ["hi"]}, "messages") == "message 1 must be an object, got str"
    bad_content = {"messages": [{"role": "user", "content": 7}, {"role": "assistant", "content": "a"}]}
    assert reason(bad_content, "messages") == "message 1 content must be a string or a list of text parts, got int"


def test_empty_message_content_and_missing_keys() -> None:
    empty = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}]}
    assert reason(empty, "messages") == "message 2 content is empty"
    assert reason({"messages": [{"content": "q"}]}, "messages") == "message 1 has no 'role'"
    assert (
        reason({"conversations": [{"from": "human"}]}, "sharegpt") == "message 1 has no 'value' or 'content'"
    )


def test_conversation_must_end_with_assistant() -> None:
    only_user = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]}
    assert reason(only_user, "messages") == "no assistant message; there is nothing to train on"
    trailing = {
        "conversations": [
            {"from": "human", "value": "q"},
            {"from": "gpt", "value": "a"},
            {"from": "human", "value": "q2"},
        ]
    }
    assert reason(trailing, "sharegpt").startswith("last message must be from the assistant")


def test_unknown_schema_is_a_config_error() -> None:
    with pytest.raises(DataError, match="data.row_schema"):
        normalise_record({"a": 1}, "dolly")
