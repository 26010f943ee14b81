"""A run's artifacts as zip archives for download (built when the button is pressed)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

ARCHIVES = {"adapter": "adapter", "merged model": "merged", "package": "package"}


def zip_folder(folder: Path) -> bytes:
    """The folder's files in a zip, paths relative to the folder's parent (so it unpacks as one folder)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder.parent).as_posix())
    return buffer.getvalue()


def available(artifacts: Path) -> dict[str, Path]:
    """The archivable folders this run has: {label: folder}."""
    return {label: artifacts / name for label, name in ARCHIVES.items() if (artifacts / name).is_dir()}
