"""Allowed roots (studio_core/roots.py) and the shared studio's path problems (studio_core/share.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studio_core.config import validate_config
from studio_core.errors import InputError
from studio_core.roots import allowed_roots, resolve_under_roots
from studio_core.share import shared_studio_problems


@pytest.fixture
def layout(tmp_path: Path):
    home, data, outside = tmp_path / "home", tmp_path / "data", tmp_path / "outside"
    for folder in (home / "uploads", data, outside):
        folder.mkdir(parents=True)
    (outside / "secret.jsonl").write_text("{}\n")
    return home, data, outside


def test_paths_under_the_home_uploads_and_data_roots_resolve(layout):
    home, data, _ = layout
    roots = allowed_roots(home, [data])
    assert resolve_under_roots(home / "uploads" / "a.jsonl", roots) == (home / "uploads" / "a.jsonl").resolve()
    assert resolve_under_roots(data / "sub" / "b.csv", roots) == (data / "sub" / "b.csv").resolve()


def test_outside_dotdot_and_escaping_symlinks_are_refused_naming_the_roots(layout):
    home, data, outside = layout
    roots = allowed_roots(home, [data])
    with pytest.raises(InputError, match=rf"data.path {outside}/secret.jsonl is outside .*{home}"):
        resolve_under_roots(outside / "secret.jsonl", roots, "data.path")
    with pytest.raises(InputError, match=r"'\.\.' is not allowed"):
        resolve_under_roots(f"{data}/../outside/secret.jsonl", roots)
    (data / "link.jsonl").symlink_to(outside / "secret.jsonl")
    with pytest.raises(InputError, match=rf"it leads to {outside}/secret.jsonl"):
        resolve_under_roots(data / "link.jsonl", roots)
    (data / "inner").mkdir()
    (data / "ok.jsonl").symlink_to(data / "inner")  # a symlink that stays inside is fine
    assert resolve_under_roots(data / "ok.jsonl", roots) == (data / "inner").resolve()


def test_the_homes_secrets_are_refused_and_settings_roots_count(layout):
    home, _, outside = layout
    with pytest.raises(InputError, match="keys in the studio home"):
        resolve_under_roots(home / "keys" / "abc" / "ed25519.key.pem", allowed_roots(home))
    with pytest.raises(InputError, match="access-token"):
        resolve_under_roots(home / "access-token", allowed_roots(home))
    (home / "settings.json").write_text(json.dumps({"data_roots": [str(outside)]}))
    assert resolve_under_roots(outside / "secret.jsonl", allowed_roots(home)) == (outside / "secret.jsonl").resolve()


def test_only_a_shared_studio_restricts_the_configs_paths(layout, monkeypatch):
    home, data, outside = layout
    config = validate_config({"data": {"path": str(outside / "secret.jsonl")},
                              "evaluation": {"test_path": str(data / "t.jsonl")},
                              "model": {"ref": str(outside)}, "policy": {"path": "/etc/passwd"}})
    assert shared_studio_problems(config, home) == []  # the local user may name any file
    monkeypatch.setenv("PEFT_STUDIO_SHARED", "1")
    monkeypatch.setenv("PEFT_STUDIO_DATA_ROOTS", str(data))
    found = {p.field: p.message for p in shared_studio_problems(config, home)}
    assert set(found) == {"data.path", "model.ref", "policy.path"}
    assert "outside the folders this shared studio may read" in found["data.path"] and str(data) in found["data.path"]
    default = validate_config({"model": {"ref": "tiny-random:llama"}})  # demo data, a generated model: no path
    assert shared_studio_problems(default, home) == []
