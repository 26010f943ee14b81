"""Data files uploaded through the studio: saved under the studio home with a safe name and a size limit."""

from __future__ import annotations

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
    """Store an uploaded data file in `<home>/uploads/`, refusing oversize or unknown kinds of file."""
    name = sanitise_filename(filename)
    if not name.lower().endswith(ALLOWED_SUFFIXES):
        raise InputError(f"{filename}: not a data file this studio reads; upload one of {', '.join(ALLOWED_SUFFIXES)}")
    if len(data) > max_bytes:
        raise InputError(f"{filename}: {len(data) / 2**20:.1f} MiB is over the {max_bytes / 2**20:.0f} MiB upload "
                         "limit; put the file on this machine and set data.path to its path instead")
    path = home / "uploads" / name
    atomic_write_bytes(path, data)
    return path
