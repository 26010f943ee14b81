"""Local Hugging Face datasets: save_to_disk folders, Hub-layout Parquet shards, `hf:` ids in the local cache.

The folders are written here the way `datasets` and `huggingface_hub` write them (Arrow stream files with
state.json, `data/<split>-0000x-of-0000n.parquet`, the Hub cache's refs/snapshots), so no download is needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from studio_core.data.hf_datasets import split_of
from studio_core.data.load import load_conversations
from studio_core.errors import DataError

ROWS = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(5)]


def conversation(i: int) -> list[dict]:
    return [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]


def save_to_disk(folder: Path, rows: list[dict], shards: int = 1) -> Path:
    """What `Dataset.save_to_disk` writes: Arrow stream shards, state.json naming them, dataset_info.json."""
    folder.mkdir(parents=True)
    names = []
    for shard in range(shards):
        name = f"data-{shard:05d}-of-{shards:05d}.arrow"
        table = pa.Table.from_pylist(rows[shard::shards])
        with pa.OSFile(str(folder / name), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        names.append(name)
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": n} for n in names],
                                                   "_fingerprint": "0", "_split": None}))
    (folder / "dataset_info.json").write_text("{}")
    return folder


def test_save_to_disk_dataset(tmp_path: Path) -> None:
    folder = save_to_disk(tmp_path / "ds", ROWS, shards=2)
    data = load_conversations(folder)
    assert data.file_format == "arrow" and data.unit == "row"
    assert data.rows == [conversation(i) for i in (0, 2, 4, 1, 3)]  # shard order, rows numbered across
    assert data.locations == [1, 2, 3, 4, 5]


def test_save_to_disk_dataset_dict_reads_train_and_names_the_rest(tmp_path: Path) -> None:
    root = tmp_path / "dd"
    save_to_disk(root / "train", ROWS[:3])
    save_to_disk(root / "validation", ROWS[3:])
    (root / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "validation"]}))
    data = load_conversations(root)
    assert data.rows == [conversation(i) for i in range(3)]
    assert "read split 'train'" in data.notes[0] and str(root / "validation") in data.notes[0]
    assert load_conversations(root / "validation").rows == [conversation(3), conversation(4)]


def hub_layout(root: Path) -> Path:
    (root / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(ROWS[:2]), root / "data" / "train-00000-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(ROWS[2:4]), root / "data" / "train-00001-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(ROWS[4:]), root / "data" / "test-00000-of-00001.parquet")
    (root / "README.md").write_text("---\nlicense: mit\n---\n")
    return root


def test_parquet_shards_laid_out_as_a_hub_repo(tmp_path: Path) -> None:
    data = load_conversations(hub_layout(tmp_path / "repo"))
    assert data.file_format == "parquet"
    assert data.rows == [conversation(i) for i in range(4)]
    assert "(2 shards)" in data.notes[0] and "test (" in data.notes[0]


@pytest.mark.parametrize(("path", "split"), [
    ("data/train-00000-of-00001.parquet", "train"), ("train/0000.parquet", "train"),
    ("default/validation/0000.parquet", "validation"), ("json-test.arrow", "test"), ("data-00000.arrow", None),
])
def test_split_names(path: str, split: str | None) -> None:
    assert split_of(Path(path)) == split


def test_several_splits_and_no_train_is_refused(tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    for split in ("validation", "test"):
        pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "r" / f"{split}.parquet")
    with pytest.raises(DataError, match="no 'train' split and several others"):
        load_conversations(tmp_path / "r")


def test_hf_id_from_the_local_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "hub"
    repo = cache / "datasets--acme--qa"
    commit = "0" * 40
    hub_layout(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    data = load_conversations("hf:acme/qa")
    assert data.rows == [conversation(i) for i in range(4)]
    assert data.file == "hf:acme/qa" and any("found at" in note for note in data.notes)


def test_hf_id_from_the_datasets_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build = tmp_path / "datasets" / "acme___qa" / "default" / "0.0.0" / "abc123"
    build.mkdir(parents=True)
    table = pa.Table.from_pylist(ROWS)
    with pa.OSFile(str(build / "qa-train.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    assert load_conversations("hf:acme/qa").rows == [conversation(i) for i in range(5)]


def test_hf_id_missing_offline_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    with pytest.raises(DataError) as info:
        load_conversations("hf:acme/missing")
    message = str(info.value)
    assert "not found in the local Hugging Face cache" in message and "HF_HUB_OFFLINE is set" in message
    assert "huggingface-cli download --repo-type dataset acme/missing" in message
