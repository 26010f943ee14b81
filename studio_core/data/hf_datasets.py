"""Local Hugging Face datasets: `save_to_disk` folders, Hub-style Parquet shards, `hf:` ids in the local cache.

No `datasets` import: the files are read with pyarrow (the format `datasets` writes), so a folder someone
copied over works with the studio's own dependencies. Where a dataset has several splits, the training
split is read (`train`, else the only one) and the others are named in the notes, with the path to give
`data.val_path` where one exists.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from studio_core.errors import DataError

SPLIT_NAMES: dict[str, tuple[str, ...]] = {
    "train": ("train", "training"),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test", "testing", "eval", "evaluation"),
}
TABLE_SUFFIXES = (".parquet", ".arrow")
HUB_DATA_PATTERNS = ["*.parquet", "*.arrow", "*.jsonl", "*.json", "*.csv", "README.md"]
_SPLIT_WORD = re.compile(r"[-_.]")


def is_dataset_folder(path: Path) -> bool:
    """A `save_to_disk` folder (Dataset or DatasetDict) or a folder holding Parquet/Arrow shards."""
    if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
        return True
    return bool(_table_files(path))


def resolve_dataset_folder(path: Path, notes: list[str]) -> tuple[list[Path], str]:
    """The files of the training split of the dataset folder `path`, in order, and their format."""
    if (path / "dataset_dict.json").is_file():
        return _dataset_dict(path, notes)
    if (path / "state.json").is_file():
        return _saved_dataset(path), "arrow"
    return _hub_layout(path, notes)


def _saved_dataset(path: Path) -> list[Path]:
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
        files = [path / entry["filename"] for entry in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"state.json of this save_to_disk folder cannot be read ({exc}); save the dataset "
                        "again with datasets' save_to_disk", file=path) from None
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise DataError(f"save_to_disk folder is missing {', '.join(missing)} (listed in state.json); copy "
                        "the whole folder", file=path)
    return files


def _dataset_dict(path: Path, notes: list[str]) -> tuple[list[Path], str]:
    try:
        splits = json.loads((path / "dataset_dict.json").read_text(encoding="utf-8"))["splits"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"dataset_dict.json cannot be read ({exc}); save the DatasetDict again", path) from None
    split = _pick_split({name: [path / name] for name in splits}, path)
    notes.append(_split_note(path, split, splits, {s: str(path / s) for s in splits}))
    return _saved_dataset(path / split), "arrow"


def _table_files(path: Path) -> list[Path]:
    return sorted(
        p for p in path.rglob("*")
        if p.suffix in TABLE_SUFFIXES and p.is_file() and not any(part.startswith(".") for part in
                                                                  p.relative_to(path).parts)
    )


def split_of(relative: Path) -> str | None:
    """The split a shard belongs to by the Hub's naming: a folder named for it, or a word of its file name.

    `data/train-00000-of-00002.parquet`, `train/0000.parquet` and `datasets`' own `json-train.arrow` all
    name the training split.
    """
    words = [*relative.parts[:-1], *_SPLIT_WORD.split(Path(relative.name).stem)]
    for word in words:
        for split, names in SPLIT_NAMES.items():
            if word.lower() in names:
                return split
    return None


def _hub_layout(path: Path, notes: list[str]) -> tuple[list[Path], str]:
    files = _table_files(path)
    formats = {f.suffix for f in files}
    if len(formats) > 1:
        raise DataError("the folder holds both Parquet and Arrow files; point data.path at the folder of one "
                        "of them", file=path)
    groups: dict[str, list[Path]] = {}
    for file in files:
        groups.setdefault(split_of(file.relative_to(path)) or "(no split name)", []).append(file)
    split = _pick_split(groups, path)
    chosen = groups[split]
    folders = sorted({str(f.parent.relative_to(path)) for f in chosen})
    if len(folders) > 1:
        raise DataError(f"split {split!r} has shards in several folders ({', '.join(folders)}): several "
                        "configurations of one dataset; point data.path at the folder of the one to use", path)
    notes.append(_split_note(path, split, list(groups), {s: ", ".join(str(f) for f in g) for s, g in groups.items()},
                             len(chosen)))
    return chosen, "parquet" if ".parquet" in formats else "arrow"


def _pick_split(groups: dict[str, list[Path]], path: Path) -> str:
    if "train" in groups:
        return "train"
    if len(groups) == 1:
        return next(iter(groups))
    raise DataError(f"the dataset has no 'train' split and several others ({', '.join(groups)}); point "
                    "data.path at the folder or file of the split to train on", file=path)


def _split_note(path: Path, split: str, splits: list[str], where: dict[str, str], shards: int = 1) -> str:
    note = f"read split {split!r} of {path}" + (f" ({shards} shards)" if shards > 1 else "")
    others = [s for s in splits if s != split]
    if others:
        note += "; other splits not read: " + "; ".join(f"{s} ({where[s]})" for s in others)
        note += " (set data.val_path to a validation split's folder or file to use it)"
    return note


def resolve_hub_id(repo_id: str, notes: list[str]) -> Path:
    """The local folder (or single file) of the Hub dataset `repo_id`: the Hub cache, else a download.

    Offline (`HF_HUB_OFFLINE=1`) only the cache is looked at, as for models.
    """
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", repo_id):
        raise DataError(f"data.path 'hf:{repo_id}': not a Hub dataset id; write hf:<org>/<name>")
    folder = _hub_snapshot(repo_id, local_only=True) or _datasets_cache(repo_id)
    if folder is None and not _offline():
        folder = _hub_snapshot(repo_id, local_only=False)
    if folder is None:
        raise DataError(
            f"data.path 'hf:{repo_id}': not found in the local Hugging Face cache ({_hub_cache()})"
            + (" and HF_HUB_OFFLINE is set" if _offline() else " and it could not be downloaded")
            + f"; download it where there is network (huggingface-cli download --repo-type dataset {repo_id}) "
            "and copy the cache, or point data.path at a local copy of the dataset"
        )
    notes.append(f"hf:{repo_id} found at {folder}")
    return _single_data_file(folder)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub_cache() -> str:
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE


def _hub_snapshot(repo_id: str, local_only: bool) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, repo_type="dataset", cache_dir=_hub_cache(),
                                      local_files_only=local_only, allow_patterns=HUB_DATA_PATTERNS))
    except Exception:  # noqa: BLE001 - not cached, no network, no such repo: the caller says what to do
        return None


def _datasets_cache(repo_id: str) -> Path | None:
    """A dataset `datasets.load_dataset` prepared earlier: <cache>/<org>___<name>/<config>/<version>/<hash>/."""
    root = Path(os.environ.get("HF_DATASETS_CACHE") or Path.home() / ".cache" / "huggingface" / "datasets")
    base = root / repo_id.replace("/", "___")
    builds = sorted((p for p in base.glob("*/*/*") if p.is_dir() and any(p.glob("*.arrow"))),
                    key=lambda p: p.stat().st_mtime)
    return builds[-1] if builds else None


def _single_data_file(folder: Path) -> Path:
    """A snapshot with only one JSON/JSONL/CSV file (and no shards) is that file; otherwise the folder."""
    if is_dataset_folder(folder):
        return folder
    files = [p for p in folder.rglob("*") if p.suffix in (".jsonl", ".json", ".csv") and p.is_file()]
    return files[0] if len(files) == 1 else folder
