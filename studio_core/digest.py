"""Streaming sha256 digests of files, folders and JSON records."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """sha256 of a file, read in 1 MiB chunks (never whole into memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_files(paths: Iterable[Path], root: Path) -> dict[str, str]:
    """Digest of each file, keyed by its path relative to `root`, sorted."""
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(paths)}


def canonical_json(record: Any) -> str:
    return json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def sha256_records(records: Iterable[Any]) -> str:
    """sha256 over canonical JSON lines: equal data gives an equal digest whatever its source format."""
    h = hashlib.sha256()
    for record in records:
        h.update(canonical_json(record).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()
