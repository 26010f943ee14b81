"""Step 1, Data Resolve: load and validate, de-duplicate, split, tokenize, report and digest.

Validation needs no tokenizer and comes first, so a bad file fails before any model is touched. Every
row keeps its location in its file up to the report, so each quality item (`quality.py`) lists the
records it concerns; the report says how the rows were rendered (`tokenize.RENDERINGS`).
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from studio_core.config import DataConfig
from studio_core.data.demo import DEMO_DATASETS, DEMO_REF_PREFIX
from studio_core.data.load import LoadedData, load_conversations, load_records_as_conversations
from studio_core.data.quality import (
    columns_item,
    duplicate_item,
    error_items,
    over_length_item,
    quality_item,
    warning_items,
)
from studio_core.data.tokenize import (
    RENDERINGS,
    TokenizedExample,
    chat_view,
    has_tools,
    length_histogram,
    pack_texts,
    supports_tools,
    tokenize_conversation,
    tokenize_text,
)
from studio_core.digest import canonical_json, sha256_records
from studio_core.errors import DataError

SIMULATION_ROWS = {"train": 64, "val": 16}
DEMO_SEED = 1234
EXAMPLE_CHARS = 4000


@dataclass
class Split:
    train: list[list[dict]]
    val: list[list[dict]]
    report: dict[str, Any] = field(default_factory=dict)
    # Where each row came from: (index into the sources, location in that source), parallel to train/val.
    train_at: list[tuple[int, int]] = field(default_factory=list)
    val_at: list[tuple[int, int]] = field(default_factory=list)
    quality: list[dict[str, Any]] = field(default_factory=list)
    row_schema: str = ""


@dataclass
class PreparedData:
    """What the later stages train and evaluate on, plus the report a reviewer reads."""

    train: list[list[dict]]
    val: list[list[dict]]
    train_tokens: list[TokenizedExample]
    val_tokens: list[TokenizedExample]
    report: dict[str, Any]


def read_source(path: str, cfg: DataConfig) -> LoadedData:
    """A data file, or a built-in generated dataset for `demo:<name>`, validated row by row."""
    if path.startswith(DEMO_REF_PREFIX):
        name = path[len(DEMO_REF_PREFIX) :]
        if name not in DEMO_DATASETS:
            raise DataError(
                f"unknown demo dataset '{name}'; available: "
                + ", ".join(DEMO_REF_PREFIX + n for n in DEMO_DATASETS),
                file="data.path",
            )
        rows = DEMO_DATASETS[name](cfg.demo_rows, DEMO_SEED, answer=cfg.demo_answer)
        return load_records_as_conversations(rows, "alpaca", {}, name=path)
    return load_conversations(path, cfg.file_format, cfg.row_schema, cfg.columns, cfg.on_bad_rows)


def dedupe(rows: list[list[dict]]) -> tuple[list[list[dict]], int]:
    """Drop exact duplicate conversations (first one kept); returns the rows and how many were dropped."""
    unique, _, removed = dedupe_located(rows, list(range(len(rows))))
    return unique, len(removed)


def dedupe_located(rows: list[list[dict]], locations: list[int]) -> tuple[list, list[int], list[int]]:
    """`dedupe` keeping each row's location: (rows kept, their locations, locations of the removed copies)."""
    seen: set[str] = set()
    unique, kept, removed = [], [], []
    for row, location in zip(rows, locations, strict=True):
        key = canonical_json(row)
        if key in seen:
            removed.append(location)
            continue
        seen.add(key)
        unique.append(row)
        kept.append(location)
    return unique, kept, removed


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic split of `n` rows: (train indices, val indices), both in row order."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(n * val_fraction))
    if n - n_val < 1:
        raise DataError(
            f"only {n} row(s): too few to hold out a validation split; add rows or set data.val_path",
            file="data.path",
        )
    val_idx = set(order[:n_val])
    return [i for i in range(n) if i not in val_idx], sorted(val_idx)


def split_rows(rows: list[list[dict]], val_fraction: float, seed: int) -> tuple[list, list]:
    """Deterministic split: the same rows and seed always give the same train/val sets."""
    train, val = split_indices(len(rows), val_fraction, seed)
    return [rows[i] for i in train], [rows[i] for i in val]


def source_quality(loaded: LoadedData, rows: list[list[dict]], locations: list[int], removed: list[int]) -> list:
    """The quality items of one source that need no tokenizer (`quality.py`)."""
    items = error_items(loaded)
    if loaded.columns_guessed:
        items.append(columns_item(loaded))
    if removed:
        items.append(duplicate_item(loaded, removed))
    return items + warning_items(loaded, rows, locations)


def build_split(cfg: DataConfig) -> tuple[Split, list[LoadedData]]:
    loaded = read_source(cfg.path, cfg)
    rows, locations, removed = dedupe_located(loaded.rows, loaded.locations)
    report: dict[str, Any] = {"duplicates_removed": len(removed)}
    quality = source_quality(loaded, rows, locations, removed)
    sources = [loaded]
    if cfg.val_path:
        val_loaded = read_source(cfg.val_path, cfg)
        _check_same_kind(loaded, val_loaded)
        sources.append(val_loaded)
        val, val_locations, val_removed = dedupe_located(val_loaded.rows, val_loaded.locations)
        quality += source_quality(val_loaded, val, val_locations, val_removed)
        train_keys = {canonical_json(r) for r in rows}
        report.update(
            val_duplicates_removed=len(val_removed),
            val_overlap_with_train=sum(canonical_json(r) in train_keys for r in val),
        )
        return Split(rows, val, report, [(0, loc) for loc in locations], [(1, loc) for loc in val_locations],
                     quality, loaded.row_schema), sources
    train_idx, val_idx = split_indices(len(rows), cfg.val_fraction, cfg.split_seed)
    return Split([rows[i] for i in train_idx], [rows[i] for i in val_idx], report,
                 [(0, locations[i]) for i in train_idx], [(0, locations[i]) for i in val_idx],
                 quality, loaded.row_schema), sources


def _check_same_kind(train: LoadedData, val: LoadedData) -> None:
    if (train.row_schema == "text") != (val.row_schema == "text"):
        raise DataError(
            f"data.val_path holds {val.row_schema} rows but data.path holds {train.row_schema} rows: raw text and "
            "conversations are trained differently; give both files the same kind of rows",
            file=val.file,
        )


def token_stats(examples: list[TokenizedExample], max_length: int) -> dict[str, Any]:
    lengths = [e.full_length for e in examples]
    return {
        "max_length": max_length,
        "truncated": sum(e.truncated for e in examples),
        "no_supervised_tokens": sum(e.supervised_tokens == 0 for e in examples),
        "mean": round(statistics.fmean(lengths), 1) if lengths else 0,
        "p50": _percentile(lengths, 50),
        "p95": _percentile(lengths, 95),
        "max": max(lengths, default=0),
        "histogram": length_histogram(lengths),
    }


def _percentile(values: list[int], q: int) -> int:
    if not values:
        return 0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def source_report(loaded: LoadedData) -> dict[str, Any]:
    return {
        "file": loaded.file,
        "file_format": loaded.file_format,
        "row_schema": loaded.row_schema,
        "unit": loaded.unit,
        "sha256": loaded.source_sha256,
        "rows_valid": len(loaded.rows),
        "rows_bad": len(loaded.bad_rows),
        "bad_rows": [{loaded.unit: b.location, **({"line": b.line} if b.line is not None else {}), "reason": b.reason,
                      "code": b.code} for b in loaded.bad_rows[:50]],
        "columns": loaded.columns,
        "columns_guessed": loaded.columns_guessed,
        "notes": loaded.notes,
    }


@dataclass
class _Tokenized:
    train: list[TokenizedExample]
    val: list[TokenizedExample]
    rendering: dict[str, Any]
    over: list[tuple[tuple[int, int], int]]  # ((source, location), tokens cut off) per over-long row


def _tokenize_text_rows(split: Split, tokenizer, max_length: int) -> _Tokenized:
    ids = {name: [tokenize_text(tokenizer, r[0]["content"]) for r in rows]
           for name, rows in (("train", split.train), ("val", split.val))}
    at = split.train_at + split.val_at
    over = [(where, len(row) - max_length) for row, where in zip(ids["train"] + ids["val"], at, strict=True)
            if len(row) > max_length]
    train, val = pack_texts(ids["train"], max_length), pack_texts(ids["val"], max_length)
    rendering = {"mode": "text", "description": RENDERINGS["text"], "tool_rows": 0,
                 "packing": {"train": {"rows": len(split.train), "examples": len(train)},
                             "val": {"rows": len(split.val), "examples": len(val)}}}
    return _Tokenized(train, val, rendering, over)


def _tokenize_chats(split: Split, tokenizer, max_length: int, train_on: str) -> _Tokenized:
    tool_rows = [r for r in split.train + split.val if has_tools(r)]
    native = bool(tool_rows) and supports_tools(tokenizer)
    mode = "chat_template" if not tool_rows else "chat_template_tools" if native else "plain_text_tools"
    train = [tokenize_conversation(tokenizer, r, max_length, train_on, native) for r in split.train]
    val = [tokenize_conversation(tokenizer, r, max_length, train_on, native) for r in split.val]
    at = split.train_at + split.val_at
    over = [(where, e.full_length - len(e.input_ids)) for e, where in zip(train + val, at, strict=True)
            if e.truncated]
    rendering: dict[str, Any] = {"mode": mode, "description": RENDERINGS[mode], "tool_rows": len(tool_rows)}
    if tool_rows:
        messages, tools = chat_view(tool_rows[0], native)
        text = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False)
        rendering["example"] = text[:EXAMPLE_CHARS]
    return _Tokenized(train, val, rendering, over)


def _token_quality(tokens: _Tokenized, sources: list[LoadedData], split: Split, max_length: int,
                   simulate: bool) -> list[dict[str, Any]]:
    items = []
    scope = " of the simulation slice" if simulate else ""
    for index, loaded in enumerate(sources):
        over = [(loc, lost) for (src, loc), lost in tokens.over if src == index]
        if over:
            items.append(over_length_item(loaded.file, loaded.unit, over, max_length, scope))
    if tokens.rendering["mode"] == "plain_text_tools":
        at = [where for row, where in zip(split.train + split.val, split.train_at + split.val_at, strict=True)
              if has_tools(row)]
        items.append(quality_item(
            "warning", "tools_plain_text", f"{tokens.rendering['tool_rows']} conversation(s){scope} with tools: "
            "the model's chat template has no tool support, so tools, calls and replies are rendered as plain "
            "text (see rendering in this report); no call is dropped", [loc for _, loc in at]))
    return items


def prepare_data(cfg: DataConfig, get_tokenizer: Callable[[], Any], simulate: bool = False) -> PreparedData:
    """Everything step 1 does, returning the tokenized splits and the report.

    `get_tokenizer` is called only once every row has validated, so bad data fails before a model is touched.
    """
    split, sources = build_split(cfg)
    report: dict[str, Any] = {"sources": [source_report(s) for s in sources], **split.report}
    report["rows"] = {"train": len(split.train), "val": len(split.val)}
    report["train_on"] = cfg.train_on
    if simulate:
        n_train, n_val = SIMULATION_ROWS["train"], SIMULATION_ROWS["val"]
        split.train, split.val = split.train[:n_train], split.val[:n_val]
        split.train_at, split.val_at = split.train_at[:n_train], split.val_at[:n_val]
        report["simulation_slice"] = {"train": len(split.train), "val": len(split.val)}
    tokenizer = get_tokenizer()
    if split.row_schema == "text":
        tokens = _tokenize_text_rows(split, tokenizer, cfg.max_length)
    else:
        tokens = _tokenize_chats(split, tokenizer, cfg.max_length, cfg.train_on)
    report["rendering"] = tokens.rendering
    report["quality"] = split.quality + _token_quality(tokens, sources, split, cfg.max_length, simulate)
    report["tokens"] = {
        "train": token_stats(tokens.train, cfg.max_length),
        "val": token_stats(tokens.val, cfg.max_length),
    }
    # The digest covers the normalised rows actually used, in order, with the split boundary marked.
    report["sha256"] = sha256_records([*split.train, "--val--", *split.val])
    return PreparedData(split.train, split.val, tokens.train, tokens.val, report)
