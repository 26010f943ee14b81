"""Detect a dataset's row schema and normalise each row to one internal conversation form.

The internal form (what every later stage sees) is a list of messages:

- `{"role": "system" | "user" | "assistant" | "tool", "content": str}`;
- an assistant message may carry `"tool_calls": [{"type": "function", "function": {"name": str,
  "arguments": dict}}, ...]` (its content may then be ""), and `"weight": 0` (OpenAI's way to keep a turn
  out of the loss); a tool message may carry `"name"` and `"tool_call_id"`;
- the tools a conversation may call ride on its first message, a system message, as
  `"tools": [{"type": "function", "function": {...JSON schema...}}]` (a system message with content ""
  is added when the row has tools and no system prompt);
- a `text` row (continued pre-training) is one message `{"role": "text", "content": str}`.

A chat conversation ends with an assistant message. Both tool dialects (OpenAI `tool_calls` / `tool`,
ShareGPT `function_call` / `observation` with a JSON-string `tools`) normalise to the same form.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from studio_core.errors import DataError

ROW_SCHEMAS = ("alpaca", "prompt_completion", "messages", "sharegpt", "text")

CANONICAL_FIELDS = (
    "instruction",
    "input",
    "output",
    "system",
    "history",
    "prompt",
    "completion",
    "messages",
    "conversations",
    "tools",
    "text",
)

# The keys each schema needs, in the order detection tries them (a chat column wins over flat columns).
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "messages": ("messages",),
    "sharegpt": ("conversations",),
    "alpaca": ("instruction", "output"),
    "prompt_completion": ("prompt", "completion"),
    "text": ("text",),
}

# Column names other projects use for alpaca's fields, tried when no schema's own names are present.
ALIASES: dict[str, tuple[str, ...]] = {
    "instruction": ("instruction", "prompt", "question", "query"),
    "output": ("output", "completion", "response", "answer"),
    "input": ("input", "context"),
    "system": ("system", "system_prompt"),
}

ROLES = ("system", "user", "assistant", "tool")
OPENAI_ROLES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
    "function": "tool",
}
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "model": "assistant",
    "bard": "assistant",
    "function_call": "function_call",
    "tool_call": "function_call",
    "observation": "tool",
    "tool": "tool",
    "function": "tool",
}
NON_TEXT_PART_HINT = "this studio trains text models: remove the part (or the row)"

_DETECT_SAMPLE = 50


class RowError(Exception):
    """One row cannot be used; `reason` says why (the loader adds the file and line), `code` what kind."""

    def __init__(self, reason: str, code: str = "invalid"):
        self.reason = reason
        self.code = code
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
    return detect_layout(records, columns, file)[0]


def detect_layout(
    records: list[dict], columns: dict[str, str] | None = None, file: str | Path | None = None
) -> tuple[str, dict[str, str]]:
    """The row schema and the column mapping to read it with (`columns`, or one guessed from aliases).

    Aliases are tried only when `columns` is empty and no schema's own field names are present; a guess
    with two candidates for one field is refused, naming them and the `data.columns` to set.
    """
    keys = _sample_keys(records, columns)
    for schema, needed in REQUIRED_FIELDS.items():
        if all(name in keys for name in needed):
            return schema, dict(columns or {})
    if not columns:
        guessed = _alias_columns(keys, file)
        if guessed:
            return "alpaca", guessed
    raise DataError(_no_schema_message(keys), file=file)


def _sample_keys(records: list[dict], columns: dict[str, str] | None) -> set[str]:
    keys: set[str] = set()
    for record in records[:_DETECT_SAMPLE]:
        keys.update(apply_columns(record, columns))
    return keys


def _alias_columns(keys: set[str], file: str | Path | None) -> dict[str, str] | None:
    found = {name: [alias for alias in aliases if alias in keys] for name, aliases in ALIASES.items()}
    if not found["instruction"] and found["input"][:1] == ["input"]:
        found["instruction"], found["input"] = ["input"], found["input"][1:]  # an input/output pair
    if not found["instruction"] or not found["output"]:
        return None
    for name, candidates in found.items():
        if len(candidates) > 1:
            example = json.dumps({name: candidates[0]})
            raise DataError(
                f"cannot tell which column holds the {name}: candidates {', '.join(candidates)}; "
                f"set data.columns to the one to use, e.g. data.columns={example}",
                file=file,
            )
    return {name: candidates[0] for name, candidates in found.items() if candidates}


def _no_schema_message(keys: set[str]) -> str:
    found = ", ".join(sorted(keys)) or "(none)"
    needs = "; ".join(f"{schema} needs {' + '.join(fields)}" for schema, fields in REQUIRED_FIELDS.items())
    return (
        f"cannot tell the row schema from the keys found ({found}); {needs}. "
        "Set data.row_schema and map your columns with data.columns, "
        'e.g. data.columns={"instruction": "question", "output": "answer"}'
    )


def normalise_record(record: dict, schema: str, columns: dict[str, str] | None = None) -> list[dict]:
    """The row as internal messages (see the module docstring); `RowError` says why a row cannot be used."""
    if not isinstance(record, dict):
        raise RowError(f"expected a record with named fields, got {type(record).__name__}", "unreadable")
    normalisers = {
        "alpaca": _alpaca,
        "prompt_completion": _prompt_completion,
        "messages": _openai_messages,
        "sharegpt": _sharegpt,
        "text": _text,
    }
    if schema not in normalisers:
        raise DataError(f"unknown data.row_schema {schema!r}; use one of: auto, {', '.join(ROW_SCHEMAS)}")
    messages = normalisers[schema](apply_columns(record, columns))
    if schema != "text":
        _check_conversation(messages)
    return messages


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _required_text(record: dict, field: str) -> str:
    if field not in record:
        raise RowError(f"missing required field {field!r}", "missing_field")
    value = record[field]
    if not isinstance(value, str):
        raise RowError(f"field {field!r} must be a string, got {_type_name(value)}", "wrong_type")
    if not value.strip():
        raise RowError(f"field {field!r} is empty", "empty_turn")
    return value


def _optional_text(record: dict, field: str) -> str | None:
    # Absent, null (Parquet) and "" (CSV) all mean "not given" for an optional field.
    value = record.get(field)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise RowError(f"field {field!r} must be a string, got {_type_name(value)}", "wrong_type")
    return value if value.strip() else None


def _alpaca(record: dict) -> list[dict]:
    instruction = _required_text(record, "instruction")
    output = _required_text(record, "output")
    extra = _optional_text(record, "input")
    system = _optional_text(record, "system")
    user = f"{instruction}\n\n{extra}" if extra else instruction
    head = [{"role": "system", "content": system}] if system else []
    turns = [*head, *_history(record), {"role": "user", "content": user}, {"role": "assistant", "content": output}]
    return _with_tools(turns, record)


def _history(record: dict) -> list[dict]:
    """LLaMA-Factory's `history`: earlier [prompt, response] pairs, oldest first, as user/assistant turns."""
    value = record.get("history")
    if value is None or value == "" or value == []:
        return []
    if isinstance(value, str):
        value = _json_field(value, "history", "bad_history", 'a JSON list of ["prompt", "response"] pairs')
    if not isinstance(value, list):
        raise RowError(f"field 'history' must be a list of [prompt, response] pairs, got {_type_name(value)}",
                       "bad_history")
    turns = []
    for number, pair in enumerate(value, start=1):
        if not isinstance(pair, list | tuple) or len(pair) != 2 or not all(isinstance(t, str) for t in pair):
            raise RowError(f"history pair {number} must be [prompt, response] (two strings), got {pair!r:.60}",
                           "bad_history")
        for text, role in zip(pair, ("user", "assistant"), strict=True):
            if not text.strip():
                raise RowError(f"history pair {number} has an empty {role} turn; fill it or drop the pair",
                               "empty_turn")
            turns.append({"role": role, "content": text})
    return turns


def _prompt_completion(record: dict) -> list[dict]:
    prompt = _required_text(record, "prompt")
    completion = _required_text(record, "completion")
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]


def _text(record: dict) -> list[dict]:
    return [{"role": "text", "content": _required_text(record, "text")}]


def _message_list(record: dict, field: str) -> list:
    if field not in record:
        raise RowError(f"missing required field {field!r}", "missing_field")
    value = record[field]
    if not isinstance(value, list):
        raise RowError(f"field {field!r} must be a list of message objects, got {_type_name(value)}",
                       "wrong_type")
    if not value:
        raise RowError(f"field {field!r} is empty", "empty_turn")
    return value


def _openai_messages(record: dict) -> list[dict]:
    messages = [
        _message(raw, number, ("role",), ("content",), OPENAI_ROLES)
        for number, raw in enumerate(_message_list(record, "messages"), start=1)
    ]
    return _with_tools(_with_system(messages, record), record)


def _sharegpt(record: dict) -> list[dict]:
    # Many ShareGPT-style datasets use role/content inside "conversations"; accept both spellings.
    messages = [
        _message(raw, number, ("from", "role"), ("value", "content"), SHAREGPT_ROLES)
        for number, raw in enumerate(_message_list(record, "conversations"), start=1)
    ]
    return _with_tools(_with_system(messages, record), record)


def _with_system(messages: list[dict], record: dict) -> list[dict]:
    # LLaMA-Factory puts the system prompt of a ShareGPT/OpenAI row beside the turns, in "system".
    system = _optional_text(record, "system")
    if system is None:
        return messages
    if messages and messages[0]["role"] == "system":
        if messages[0]["content"] != system:  # keeping either would silently drop the other
            raise RowError("the row has both a 'system' field and a different system message; keep one",
                           "two_systems")
        return messages
    return [{"role": "system", "content": system}, *messages]


def _with_tools(messages: list[dict], record: dict) -> list[dict]:
    tools = _tools(record.get("tools"))
    if not tools:
        return messages
    if messages and messages[0]["role"] == "system":
        return [{**messages[0], "tools": tools}, *messages[1:]]
    return [{"role": "system", "content": "", "tools": tools}, *messages]


def _json_field(text: str, field: str, code: str, expected: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RowError(f"field {field!r} is a string but not valid JSON ({exc.msg}); make it {expected}",
                       code) from None


def _tools(value: Any) -> list[dict]:
    """The row's tool schemas in the OpenAI form; a JSON-encoded string (ShareGPT) is decoded first."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return []
    if isinstance(value, str):
        value = _json_field(value, "tools", "bad_tools", "a JSON list of function schemas")
    if not isinstance(value, list):
        raise RowError(f"field 'tools' must be a list of function schemas, got {_type_name(value)}", "bad_tools")
    tools = []
    for number, tool in enumerate(value, start=1):
        function = tool.get("function", tool) if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            raise RowError(f"tool {number} in field 'tools' has no 'name'; each tool needs at least "
                           '{"name": ..., "parameters": {...}}', "bad_tools")
        tools.append({"type": "function", "function": function})
    return tools


def _first_key(message: dict, keys: tuple[str, ...], number: int) -> Any:
    for key in keys:
        if key in message:
            return message[key]
    raise RowError(f"message {number} has no {' or '.join(map(repr, keys))}", "missing_field")


def _message(raw: Any, number: int, role_keys: tuple, content_keys: tuple, roles: dict[str, str]) -> dict:
    if not isinstance(raw, dict):
        raise RowError(f"message {number} must be an object, got {_type_name(raw)}", "wrong_type")
    role = _first_key(raw, role_keys, number)
    if not isinstance(role, str) or role.strip().lower() not in roles:
        raise RowError(f"unknown role {role!r} in message {number}; allowed: {', '.join(roles)}", "unknown_role")
    role = roles[role.strip().lower()]
    if role == "function_call":  # ShareGPT: the value is the call itself, as JSON
        calls = _sharegpt_calls(_first_key(raw, content_keys, number), number)
        return {"role": "assistant", "content": "", "tool_calls": calls}
    calls = _openai_calls(raw, number) if role == "assistant" else []
    content = _content(raw, content_keys, number, allow_empty=bool(calls))
    message = {"role": role, "content": content}
    if calls:
        message["tool_calls"] = calls
    if role == "assistant" and "weight" in raw:  # OpenAI fine-tuning: weight 0 keeps a turn out of the loss
        if raw["weight"] not in (0, 1) or isinstance(raw["weight"], bool):
            raise RowError(f"message {number} 'weight' must be 0 or 1, got {raw['weight']!r}", "wrong_type")
        if raw["weight"] == 0:
            message["weight"] = 0
    if role == "tool":
        message.update({key: raw[key] for key in ("name", "tool_call_id") if isinstance(raw.get(key), str)})
    return message


def _content(raw: dict, keys: tuple[str, ...], number: int, allow_empty: bool) -> str:
    present = [key for key in keys if key in raw]
    if not present and allow_empty:
        return ""
    value = _first_key(raw, keys, number)
    if value is None and allow_empty:
        return ""
    if isinstance(value, list):
        value = _join_parts(value, number)
    if not isinstance(value, str):
        raise RowError(f"message {number} content must be a string or a list of text parts, got "
                       f"{_type_name(value)}", "wrong_type")
    if not value.strip() and not allow_empty:
        raise RowError(f"message {number} content is empty", "empty_turn")
    return value


def _join_parts(parts: list, number: int) -> str:
    """Content parts (`[{"type": "text", "text": ...}]`, or LLaMA-Factory v1's `value`): text joined by newlines."""
    texts = []
    for index, part in enumerate(parts, start=1):
        if isinstance(part, str):
            texts.append(part)
            continue
        kind = part.get("type", "text") if isinstance(part, dict) else _type_name(part)
        if kind != "text":
            raise RowError(f"message {number} part {index} is of type {kind!r}; {NON_TEXT_PART_HINT}",
                           "non_text_part")
        text = part.get("text", part.get("value"))
        if not isinstance(text, str):
            raise RowError(f"message {number} part {index} has no 'text' string", "wrong_type")
        texts.append(text)
    return "\n".join(texts)


def _openai_calls(raw: dict, number: int) -> list[dict]:
    calls = raw.get("tool_calls")
    if calls is None and isinstance(raw.get("function_call"), dict):  # the legacy single-function form
        calls = [raw["function_call"]]
    if calls is None or calls == []:
        return []
    if not isinstance(calls, list):
        raise RowError(f"message {number} field 'tool_calls' must be a list, got {_type_name(calls)}",
                       "bad_tool_call")
    return [_call(call, number, index) for index, call in enumerate(calls, start=1)]


def _sharegpt_calls(value: Any, number: int) -> list[dict]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise RowError(f"message {number} (function_call) is not valid JSON ({exc.msg}); write the call as "
                           '{"name": ..., "arguments": {...}}', "bad_tool_call") from None
    calls = value if isinstance(value, list) else [value]
    if not calls:
        raise RowError(f"message {number} (function_call) holds no call", "bad_tool_call")
    return [_call(call, number, index) for index, call in enumerate(calls, start=1)]


def _call(call: Any, number: int, index: int) -> dict:
    """One tool call as {"type": "function", "function": {"name", "arguments": dict}} (+ "id" if given)."""
    function = call.get("function", call) if isinstance(call, dict) else None
    where = f"message {number} tool call {index}"
    if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
        raise RowError(f"{where} has no function 'name'; write it as "
                       '{"name": ..., "arguments": {...}}', "bad_tool_call")
    arguments = function.get("arguments", function.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            raise RowError(f"{where} ({function['name']}): 'arguments' is not valid JSON ({exc.msg}); "
                           "fix the JSON string or give an object", "bad_tool_call") from None
    if not isinstance(arguments, dict):
        raise RowError(f"{where} ({function['name']}): 'arguments' must be an object, got "
                       f"{_type_name(arguments)}", "bad_tool_call")
    normal = {"type": "function", "function": {"name": function["name"], "arguments": arguments}}
    if isinstance(call, dict) and isinstance(call.get("id"), str):
        normal["id"] = call["id"]
    return normal


def _check_conversation(messages: list[dict]) -> None:
    for number, message in enumerate(messages, start=1):
        before = messages[number - 2] if number > 1 else None
        if message["role"] == "tool" and not (before and (before.get("tool_calls") or before["role"] == "tool")):
            raise RowError(f"message {number} is a tool reply, but no assistant tool call comes before it; add "
                           "the call (tool_calls, or a function_call turn) or drop the reply", "orphan_tool_reply")
    if not any(message["role"] == "assistant" for message in messages):
        raise RowError("no assistant message; there is nothing to train on", "no_assistant")
    if messages[-1]["role"] != "assistant":
        raise RowError(f"last message must be from the assistant, got {messages[-1]['role']}; "
                       "drop the trailing turns or add the assistant's reply", "last_not_assistant")
