"""Local storage: data files and model folders under the allowed roots, through the roots' own guard."""

from __future__ import annotations

import json

from studio_core.connectors.local import LocalData, LocalModels, studio_roots


def test_data_and_model_folders_under_the_roots_are_listed_and_nothing_outside(tmp_path, studio_env, monkeypatch):
    corpora, outside = tmp_path / "corpora", tmp_path / "outside"
    (corpora / "legal").mkdir(parents=True)
    outside.mkdir()
    (corpora / "legal" / "train.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    (corpora / "notes.txt").write_text("not data")
    (corpora / "saved").mkdir()
    (corpora / "saved" / "dataset_info.json").write_text("{}")
    model = corpora / "my-model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (model / "model.safetensors").write_bytes(b"\0" * 16)
    (outside / "secret.jsonl").write_text("{}\n")
    (corpora / "leak.jsonl").symlink_to(outside / "secret.jsonl")  # leads out of every root: never offered
    (studio_env / "uploads").mkdir()
    (studio_env / "uploads" / "mine.csv").write_text("prompt,completion\na,b\n")
    (studio_env / "keys").mkdir()
    (studio_env / "keys" / "k.json").write_text("{}")  # the home's secrets: never offered, even through a link
    (studio_env / "uploads" / "k.json").symlink_to(studio_env / "keys" / "k.json")
    (studio_env / "studio" / "drafts").mkdir(parents=True)
    (studio_env / "studio" / "drafts" / "d.json").write_text("{}")  # the studio's own state: not data
    monkeypatch.setenv("PEFT_STUDIO_DATA_ROOTS", str(corpora))

    roots = studio_roots(studio_env)
    data = {e.path: e for e in LocalData(roots).list_data()}
    assert set(data) == {str(corpora / "legal" / "train.jsonl"), str(corpora / "saved"),
                         str(studio_env.resolve() / "uploads" / "mine.csv")}
    assert data[str(corpora / "saved")].kind == "dataset-folder"
    assert data[str(corpora / "legal" / "train.jsonl")].root == str(corpora.resolve())
    models = [m.ref for m in LocalModels(roots).list_models()]
    assert models == [str(model)]
    assert "k.json" not in {p.rsplit("/", 1)[-1] for p in data}
