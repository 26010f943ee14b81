"""Step 1, Data Resolve: load and validate, de-duplicate, split, tokenize, report and digest.

Validation needs no tokenizer and comes first, so a bad file fails before any model is touched.
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
from studio_core.data.tokenize import TokenizedExample, length_histogram, tokenize_conversation
from studio_core.digest import canonical_json, sha256_records
from studio_core.errors import DataError

SIMULATION_ROWS = {"train": 64, "val": 16}
DEMO_SEED = 1234


@dataclass
class Split:
    train: list[list[dict]]
    val: list[list[dict]]
    report: dict[str, Any] = field(default_factory=dict)


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
        rows = DEMO_DATASETS[name](cfg.demo_rows, DEMO_SEED)
        return load_records_as_conversations(rows, "alpaca", {}, name=path)
    return load_conversations(path, cfg.file_format, cfg.row_schema, cfg.columns, cfg.on_bad_rows)


def dedupe(rows: list[list[dict]]) -> tuple[list[list[dict]], int]:
    """Drop exact duplicate conversations (first one kept); returns the rows and how many were dropped."""
    seen: set[str] = set()
    unique = []
    for row in rows:
        key = canonical_json(row)
        if key not in seen:
            seen.add(key)
            unique.append(row)
    return unique, len(rows) - len(unique)


def split_rows(rows: list[list[dict]], val_fraction: float, seed: int) -> tuple[list, list]:
    """Deterministic split: the same rows and seed always give the same train/val sets."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(rows) * val_fraction))
    if len(rows) - n_val < 1:
        raise DataError(
            f"only {len(rows)} row(s): too few to hold out a validation split; add rows or set data.val_path",
            file="data.path",
        )
    val_idx = set(order[:n_val])
    return [r for i, r in enumerate(rows) if i not in val_idx], [rows[i] for i in sorted(val_idx)]


def build_split(cfg: DataConfig) -> tuple[Split, list[LoadedData]]:
    loaded = read_source(cfg.path, cfg)
    rows, duplicates = dedupe(loaded.rows)
    report: dict[str, Any] = {"duplicates_removed": duplicates}
    sources = [loaded]
    if cfg.val_path:
        val_loaded = read_source(cfg.val_path, cfg)
        sources.append(val_loaded)
        val, val_dups = dedupe(val_loaded.rows)
        train_keys = {canonical_json(r) for r in rows}
        report.update(
            val_duplicates_removed=val_dups,
            val_overlap_with_train=sum(canonical_json(r) in train_keys for r in val),
        )
        return Split(rows, val, report), sources
    train, val = split_rows(rows, cfg.val_fraction, cfg.split_seed)
    return Split(train, val, report), sources


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
        "sha256": loaded.source_sha256,
        "rows_valid": len(loaded.rows),
        "rows_bad": len(loaded.bad_rows),
        "bad_rows": [{loaded.unit: b.location, "reason": b.reason} for b in loaded.bad_rows[:50]],
    }


def prepare_data(cfg: DataConfig, get_tokenizer: Callable[[], Any], simulate: bool = False) -> PreparedData:
    """Everything step 1 does, returning the tokenized splits and the report.

    `get_tokenizer` is called only once every row has validated, so bad data fails before a model is touched.
    """
    split, sources = build_split(cfg)
    report: dict[str, Any] = {"sources": [source_report(s) for s in sources], **split.report}
    report["rows"] = {"train": len(split.train), "val": len(split.val)}
    if simulate:
        split.train, split.val = split.train[: SIMULATION_ROWS["train"]], split.val[: SIMULATION_ROWS["val"]]
        report["simulation_slice"] = {"train": len(split.train), "val": len(split.val)}
    tokenizer = get_tokenizer()
    train_tokens = [tokenize_conversation(tokenizer, r, cfg.max_length) for r in split.train]
    val_tokens = [tokenize_conversation(tokenizer, r, cfg.max_length) for r in split.val]
    report["tokens"] = {
        "train": token_stats(train_tokens, cfg.max_length),
        "val": token_stats(val_tokens, cfg.max_length),
    }
    # The digest covers the normalised rows actually used, in order, with the split boundary marked.
    report["sha256"] = sha256_records([*split.train, "--val--", *split.val])
    return PreparedData(split.train, split.val, train_tokens, val_tokens, report)
