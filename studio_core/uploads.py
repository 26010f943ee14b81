"""Data files uploaded through the studio: saved under the studio home with a safe name and a size limit."""

from __future__ import annotations

import os
import re
from pathlib import Path

from studio_core.errors import InputError
from studio_core.runs import atomic_write_bytes

ALLOWED_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".parquet", ".pq")
DEFAULT_MAX_BYTES = 1024 * 1024 * 1024


def sanitise_filename(name: str) -> str:
    """A plain file name: no directories, no leading dots, only [A-Za-z0-9._-]."""
    base = re.split(r"[\\\\/]", name)[-1]
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).lstrip(".")
    return base[:120] or "upload"


def save_upload(home: Path, filename: str, data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> Path:
    """Store an uploaded data file in `<home>/uploads/` under a name not taken yet (returned: show it), refusing
    oversize or unknown kinds of file."""
    name = sanitise_filename(filename)
    if not name.lower().endswith(ALLOWED_SUFFIXES):
        raise InputError(f"{filename}: not a data file this studio reads; upload one of {', '.join(ALLOWED_SUFFIXES)}")
    if len(data) > max_bytes:
        raise InputError(f"{filename}: {len(data) / 2**20:.1f} MiB is over the {max_bytes / 2**20:.0f} MiB upload "
                         "limit; put the file on this machine and set data.path to its path instead")
    path = _reserve(Path(home) / "uploads", name)
    atomic_write_bytes(path, data)  # replaces only the empty file reserved above
    return path


def _reserve(folder: Path, name: str) -> Path:
    """A new file `name` in `folder`, or `stem-2.ext`, `stem-3.ext`...: an upload never replaces an earlier one,
    whichever session sent it (O_EXCL makes the choice safe between sessions saving at once)."""
    folder.mkdir(parents=True, exist_ok=True)
    stem, dot, suffix = name.rpartition(".")
    for n in range(1, 10_000):
        candidate = folder / (name if n == 1 else f"{stem}-{n}{dot}{suffix}")
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            return candidate
        except FileExistsError:
            continue
    raise InputError(f"{folder}: 10,000 uploads named {name} already; remove some or rename the file")
