"""Detect a dataset's row schema and normalise each row to chat messages.

Every row becomes `[{"role": "system" | "user" | "assistant", "content": str}, ...]`,
ending with an assistant message.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from studio_core.errors import DataError

ROW_SCHEMAS = ("alpaca", "prompt_completion", "messages", "sharegpt")

CANONICAL_FIELDS = (
    "instruction",
    "input",
    "output",
    "system",
    "prompt",
    "completion",
    "messages",
    "conversations",
)

# The keys each schema needs, in the order detection tries them (a chat column wins over flat columns).
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "messages": ("messages",),
    "sharegpt": ("conversations",),
    "alpaca": ("instruction", "output"),
    "prompt_completion": ("prompt", "completion"),
}

ROLES = ("system", "user", "assistant")
OPENAI_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "model": "assistant",
    "bard": "assistant",
}

_DETECT_SAMPLE = 50


class RowError(Exception):
    """One row cannot be used; `reason` says why (the loader adds the file and line)."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


def apply_columns(record: Mapping[str, Any], columns: Mapping[str, str] | None) -> dict[str, Any]:
    """A copy of `record` where each canonical field of `columns` takes the value of its source column."""
    if not columns:
        return dict(record)
    _check_columns(columns)
    mapped = {key: value for key, value in record.items() if key not in columns.values()}
    for canonical, source in columns.items():
        if source in record:
            mapped[canonical] = record[source]
    return mapped


def _check_columns(columns: Mapping[str, str]) -> None:
    unknown = [key for key in columns if key not in CANONICAL_FIELDS]
    if unknown:
        raise DataError(
            f"data.columns: unknown field(s) {', '.join(map(repr, unknown))}; the keys must be canonical "
            f"field names ({', '.join(CANONICAL_FIELDS)}) and the values your column names"
        )


def detect_schema(
    records: list[dict], columns: dict[str, str] | None = None, file: str | Path | None = None
) -> str:
    """The row schema that fits the keys of the first records; `DataError` when none does."""
    keys: set[str] = set()
    for record in records[:_DETECT_SAMPLE]:
        keys.update(apply_columns(record, columns))
    for schema, needed in REQUIRED_FIELDS.items():
        if all(field in keys for field in needed):
            return schema
    raise DataError(_no_schema_message(keys), file=file)


def _no_schema_message(keys: set[str]) -> str:
    found = ", ".join(sorted(keys)) or "(none)"
    needs = "; ".join(f"{schema} needs {' + '.join(fields)}" for schema, fields in REQUIRED_FIELDS.items())
    return (
        f"cannot tell the row schema from the keys found ({found}); {needs}. "
        "Set data.row_schema and map your columns with data.columns, "
        'e.g. data.columns={"instruction": "question", "output": "answer"}'
    )


def normalise_record(record: dict, schema: str, columns: dict[str, str] | None = None) -> list[dict]:
    """The row as chat messages; `RowError` says why a row cannot be used."""
    if not isinstance(record, dict):
        raise RowError(f"expected a record with named fields, got {type(record).__name__}")
    normalisers = {
        "alpaca": _alpaca,
        "prompt_completion": _prompt_completion,
        "messages": _openai_messages,
        "sharegpt": _sharegpt,
    }
    if schema not in normalisers:
        raise DataError(f"unknown data.row_schema {schema!r}; use one of: auto, {', '.join(ROW_SCHEMAS)}")
    messages = normalisers[schema](apply_columns(record, columns))
    _check_conversation(messages)
    return messages


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _required_text(record: dict, field: str) -> str:
    if field not in record:
        raise RowError(f"missing required field {field!r}")
    value = record[field]
    if not isinstance(value, str):
        raise RowError(f"field {field!r} must be a string, got {_type_name(value)}")
    if not value.strip():
        raise RowError(f"field {field!r} is empty")
    return value


def _optional_text(record: dict, field: str) -> str | None:
    # Absent, null (Parquet) and "" (CSV) all mean "not given" for an optional field.
    value = record.get(field)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise RowError(f"field {field!r} must be a string, got {_type_name(value)}")
    return value if value.strip() else None


def _alpaca(record: dict) -> list[dict]:
    instruction = _required_text(record, "instruction")
    output = _required_text(record, "output")
    extra = _optional_text(record, "input")
    system = _optional_text(record, "system")
    user = f"{instruction}\n\n{extra}" if extra else instruction
    head = [{"role": "system", "content": system}] if system else []
    return [*head, {"role": "user", "content": user}, {"role": "assistant", "content": output}]


def _prompt_completion(record: dict) -> list[dict]:
    prompt = _required_text(record, "prompt")
    completion = _required_text(record, "completion")
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]


def _message_list(record: dict, field: str) -> list:
    if field not in record:
        raise RowError(f"missing required field {field!r}")
    value = record[field]
    if not isinstance(value, list):
        raise RowError(f"field {field!r} must be a list of message objects, got {_type_name(value)}")
    if not value:
        raise RowError(f"field {field!r} is empty")
    return value


def _openai_messages(record: dict) -> list[dict]:
    return [
        _message(raw, number, ("role",), ("content",), OPENAI_ROLES)
        for number, raw in enumerate(_message_list(record, "messages"), start=1)
    ]


def _sharegpt(record: dict) -> list[dict]:
    # Many ShareGPT-style datasets use role/content inside "conversations"; accept both spellings.
    return [
        _message(raw, number, ("from", "role"), ("value", "content"), SHAREGPT_ROLES)
        for number, raw in enumerate(_message_list(record, "conversations"), start=1)
    ]


def _first_key(message: dict, keys: tuple[str, ...], number: int) -> Any:
    for key in keys:
        if key in message:
            return message[key]
    raise RowError(f"message {number} has no {' or '.join(map(repr, keys))}")


def _message(raw: Any, number: int, role_keys: tuple, content_keys: tuple, roles: dict[str, str]) -> dict:
    if not isinstance(raw, dict):
        raise RowError(f"message {number} must be an object, got {_type_name(raw)}")
    role = _first_key(raw, role_keys, number)
    if not isinstance(role, str) or role.strip().lower() not in roles:
        raise RowError(f"unknown role {role!r} in message {number}; allowed: {', '.join(ROLES)}")
    content = _first_key(raw, content_keys, number)
    if not isinstance(content, str):
        raise RowError(f"message {number} content must be a string, got {_type_name(content)}")
    if not content.strip():
        raise RowError(f"message {number} content is empty")
    return {"role": roles[role.strip().lower()], "content": content}


def _check_conversation(messages: list[dict]) -> None:
    if not any(message["role"] == "assistant" for message in messages):
        raise RowError("no assistant message; there is nothing to train on")
    if messages[-1]["role"] != "assistant":
        raise RowError(f"last message must be from the assistant, got {messages[-1]['role']}")
