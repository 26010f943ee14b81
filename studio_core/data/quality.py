"""The data quality report: what is wrong or doubtful in the rows, each item with its record numbers.

An item is `{"level": "error" | "warning", "code": str, "message": str, "count": int, "records": [int]}`:
`records` are locations in the file the message names (its line, CSV record or row, as in bad-row
listings), the first `RECORDS_CAP` of them. Errors are rows that cannot be trained on as they are: they
follow `data.on_bad_rows` (the load fails listing them, or they are dropped and listed here). Warnings
never block: the rows are kept (or, for exact duplicates, all but the first are dropped) and listed.
"""

from __future__ import annotations

import re
from typing import Any

from studio_core.data.load import LoadedData

RECORDS_CAP = 50

# What each error code means for the rows and how to fix it (the per-row reasons say which field).
ERRORS: dict[str, tuple[str, str]] = {
    "unreadable": ("cannot be read (broken JSON, not an object, or the wrong number of CSV fields)",
                   "fix the syntax of these records"),
    "missing_field": ("lack a required field", "add the field, or map your column to it with data.columns"),
    "wrong_type": ("have a field of the wrong type", "give the field the type named in the reason"),
    "empty_turn": ("have an empty turn", "write the turn's text or remove the turn"),
    "unknown_role": ("have a turn with an unknown role", "use system, user, assistant or tool"),
    "non_text_part": ("have non-text content parts (images, audio, files)",
                      "this studio trains text models: remove those parts or rows"),
    "bad_tool_call": ("have a tool call that cannot be read", 'write each call as {"name": ..., "arguments": {...}}'),
    "bad_tools": ("have a 'tools' field that cannot be read", "make it a (JSON) list of function schemas"),
    "bad_history": ("have a 'history' that is not a list of [prompt, response] pairs", "fix the history"),
    "no_assistant": ("have no assistant turn (nothing to train on)", "add the assistant's reply or drop the row"),
    "orphan_tool_reply": ("have a tool reply that answers no tool call", "add the call before it or drop the reply"),
    "two_systems": ("have both a 'system' field and a different system message", "keep one of them"),
    "last_not_assistant": ("do not end with an assistant turn", "drop the trailing turns or add the reply"),
    "invalid": ("cannot be used", "see the reasons listed in sources[].bad_rows"),
}
PLACEHOLDER = re.compile(r"\{\{\s*[^{}\s][^{}]*\}\}")
_SPACE = re.compile(r"\s+")


def quality_item(level: str, code: str, message: str, records: list[int], count: int | None = None) -> dict:
    """One report item; `count` is how many rows it concerns (default: all of `records`, before the cap)."""
    return {"level": level, "code": code, "message": message, "count": len(records) if count is None else count,
            "records": list(records[:RECORDS_CAP])}


def error_items(loaded: LoadedData) -> list[dict[str, Any]]:
    """One error item per kind of bad row (they were dropped: data.on_bad_rows=skip)."""
    by_code: dict[str, list] = {}
    for bad in loaded.bad_rows:
        by_code.setdefault(bad.code if bad.code in ERRORS else "invalid", []).append(bad)
    items = []
    for code, bads in by_code.items():
        what, fix = ERRORS[code]
        first = bads[0]
        message = (f"{loaded.file}: {_count(len(bads), 'row')} {what}, dropped (data.on_bad_rows=skip); "
                   f"e.g. {loaded.unit} {first.location}: {first.reason}; fix: {fix}")
        items.append(quality_item("error", code, message, [b.location for b in bads]))
    return items


def warning_items(loaded: LoadedData, rows: list[list[dict]], locations: list[int]) -> list[dict[str, Any]]:
    """Doubtful but trainable rows: no user turn, assistant first, template placeholders, near duplicates."""
    file, unit = loaded.file, loaded.unit
    checks = {
        "no_user_turn": (_no_user_turn, "with no user turn: the model learns to answer unprompted; add the user's "
                         "question if it was lost"),
        "assistant_first": (_assistant_first, "where the assistant speaks first (before any user turn); check "
                            "the turn order"),
        "placeholder": (_placeholder, "containing a template placeholder such as {{name}}: text that was never "
                        "filled in; fill it or drop the row"),
    }
    items = []
    for code, (check, what) in checks.items():
        found = [loc for row, loc in zip(rows, locations, strict=True) if check(row)]
        if found:
            items.append(quality_item("warning", code, f"{file}: {_count(len(found), 'row')} {what} "
                                      f"({unit}s listed)", found))
    near = near_duplicates(rows, locations)
    if near:
        items.append(quality_item(
            "warning", "near_duplicate",
            f"{file}: {_count(len(near), 'row')} {_verb(len(near), 'repeats', 'repeat')} an earlier row up to case and "
            f"whitespace (kept; {unit}s listed are the repeats); remove them if they are not meant to weigh double",
            near))
    return items


def _no_user_turn(row: list[dict]) -> bool:
    return row[0]["role"] != "text" and not any(m["role"] == "user" for m in row)


def _assistant_first(row: list[dict]) -> bool:
    turns = [m["role"] for m in row if m["role"] != "system"]
    return bool(turns) and turns[0] == "assistant" and "user" in turns


def _placeholder(row: list[dict]) -> bool:
    return any(PLACEHOLDER.search(m["content"]) for m in row)


def text_key(row: list[dict]) -> str:
    """The row's text with case and whitespace normalised: equal keys are near duplicates."""
    return "\n".join(f"{m['role']}:{_SPACE.sub(' ', m['content']).strip().casefold()}" for m in row)


def near_duplicates(rows: list[list[dict]], locations: list[int]) -> list[int]:
    """Locations of rows whose `text_key` equals an earlier row's (rows are already exact-deduplicated)."""
    seen: set[str] = set()
    repeats = []
    for row, location in zip(rows, locations, strict=True):
        key = text_key(row)
        if key in seen:
            repeats.append(location)
        seen.add(key)
    return repeats


def duplicate_item(loaded: LoadedData, removed: list[int]) -> dict[str, Any]:
    return quality_item(
        "warning", "duplicate", f"{loaded.file}: removed {_count(len(removed), 'exact duplicate row')} (the first "
        f"copy kept; {loaded.unit}s listed are the removed copies)", removed)


def columns_item(loaded: LoadedData) -> dict[str, Any]:
    mapping = ", ".join(f"{source} -> {canonical}" for canonical, source in loaded.columns.items())
    return quality_item(
        "warning", "columns_guessed", f"{loaded.file}: columns mapped by name ({mapping}); if that is wrong, set "
        "data.columns", [], count=len(loaded.rows))


def over_length_item(file: str, unit: str, over: list[tuple[int, int]], max_length: int, scope: str) -> dict:
    lost = sum(n for _, n in over)
    return quality_item(
        "warning", "over_max_length",
        f"{file}: {_count(len(over), 'row')}{scope} {_verb(len(over), 'is', 'are')} longer than data.max_length="
        f"{max_length}: {lost:,} tokens cut off the end ({unit}s listed); raise data.max_length or shorten them",
        [loc for loc, _ in over])


def _verb(n: int, one: str, many: str) -> str:
    return one if n == 1 else many


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
