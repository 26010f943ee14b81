"""Local storage: the data files and model folders under the studio's allowed roots (`studio_core.roots`), for the
pickers of steps 1 and 2.

Every entry found passes `roots.resolve_under_roots`, the same guard a typed path passes in a shared studio, so a
symlink leading out of the roots, or into the home's secrets, is never offered. In the studio home only its
`uploads/` (data) and `models/` (model folders) are looked in: the rest is the studio's own state (runs, drafts,
queue, tracking stores). The walk stays shallow and bounded (`MAX_DEPTH`, `MAX_ENTRIES`), skips hidden folders
and the Hugging Face cache's internals (its models are listed as `hf:` references by `hub.cached_models`).
"""

from __future__ import annotations

import os
from pathlib import Path

from studio_core.connectors.data import DataEntry
from studio_core.connectors.model import ModelEntry
from studio_core.errors import InputError
from studio_core.roots import Roots, allowed_roots, data_roots_from_env, resolve_under_roots

DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
DATASET_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")  # datasets' save_to_disk folders
MAX_DEPTH = 4
MAX_ENTRIES = 500
SKIP_DIRS = {"hub", "checkpoints", "node_modules", "__pycache__", "wandb", "tensorboard"}
NOT_DATA = {"config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
            "generation_config.json", "adapter_config.json", "model.json", "status.json", "settings.json"}


def studio_roots(home: str | Path | None = None) -> Roots:
    """The roots this studio reads from: the home, `--data-root` folders and the settings' data_roots."""
    return allowed_roots(home, data_roots_from_env())


def _walk(roots: Roots, in_home: str):
    """(folder, its file names, root) for folders under the roots, shallow first, within the bounds; in the home
    (the first root) only its `in_home` folder."""
    seen = 0
    for index, root in enumerate(roots.allowed):
        top = root / in_home if index == 0 else root
        for folder, dirs, files in os.walk(top):
            depth = len(Path(folder).relative_to(root).parts)
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS
                             and not d.startswith("models--") and depth < MAX_DEPTH)
            yield Path(folder), sorted(files), root
            seen += 1
            if seen >= MAX_ENTRIES:
                return


def _guarded(path: Path, roots: Roots) -> Path | None:
    try:
        return resolve_under_roots(path, roots, "entry")
    except InputError:
        return None


class LocalData:
    """Data files (.jsonl/.json/.csv/.parquet) and datasets' save_to_disk folders under the roots."""

    name = "local-data"

    def __init__(self, roots: Roots):
        self.roots = roots

    def list_data(self) -> list[DataEntry]:
        found = []
        for folder, files, root in _walk(self.roots, "uploads"):
            if any(m in files for m in DATASET_MARKERS) and _guarded(folder, self.roots):
                found.append(DataEntry(str(folder), "dataset-folder", _size(folder, files), str(root)))
                continue
            for name in files:
                path = folder / name
                if name.endswith(DATA_SUFFIXES) and name not in NOT_DATA and _guarded(path, self.roots):
                    found.append(DataEntry(str(path), "file", path.stat().st_size, str(root)))
        return sorted(found, key=lambda e: -os.stat(e.path).st_mtime)[:MAX_ENTRIES]


class LocalModels:
    """Model folders (config.json beside *.safetensors) under the roots."""

    name = "local-models"

    def __init__(self, roots: Roots):
        self.roots = roots

    def list_models(self) -> list[ModelEntry]:
        found = []
        for folder, files, _ in _walk(self.roots, "models"):
            if "config.json" in files and any(f.endswith(".safetensors") for f in files) \
                    and "adapter_config.json" not in files and _guarded(folder, self.roots):
                found.append(ModelEntry(str(folder), "local", _size(folder, files)))
        return found


def _size(folder: Path, files: list[str]) -> int:
    total = 0
    for name in files:
        try:
            total += (folder / name).stat().st_size
        except OSError:
            continue
    return total
