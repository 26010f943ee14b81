"""A tiny trained run (once per session) and a freshly built, signed package of it per test."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from studio_core.package import build_package, generate_keys, load_private_keys, sign_package
from studio_core.package.keys import PrivateKeys
from studio_core.package.manifest import build_manifest, manifest_bytes

TINY_RUN = {
    "name": "pkg",
    "model": {"ref": "tiny-random:llama"},
    "data": {"demo_rows": 120, "max_length": 256},
    "preflight": {"enabled": False},
    "training": {"max_steps": 2, "eval_steps": 1, "save_steps": 2, "per_device_batch_size": 2,
                 "gradient_accumulation_steps": 1, "eval_rows": 4, "precision": "fp32"},
    "evaluation": {"max_rows": 4, "task_rows": 2, "max_new_tokens": 4, "samples": 1},
}


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Path:
    """A completed tiny-random training run (adapter, merged model, eval): its run directory."""
    from studio_core import workflow
    from studio_core.config import validate_config

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PEFT_STUDIO_MODEL_CACHE", str(model_cache))
        mp.setenv("HF_HUB_OFFLINE", "1")
        run = workflow.run(validate_config(TINY_RUN), tmp_path_factory.mktemp("run-home"))
    assert run.read_status()["state"] == "completed"
    return run.path


@pytest.fixture
def run_copy(trained_run: Path, tmp_path: Path) -> Path:
    """A private copy of the trained run, free to edit."""
    return Path(shutil.copytree(trained_run, tmp_path / "run", ignore=shutil.ignore_patterns("checkpoints")))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def keys(home: Path) -> PrivateKeys:
    return load_private_keys(home, generate_keys(home).key_id)


@pytest.fixture
def package(trained_run: Path, tmp_path: Path, keys: PrivateKeys) -> Path:
    """The trained run's package, built into tmp_path/package and signed with `keys`."""
    out = build_package(trained_run, tmp_path / "package")
    sign_package(out, keys)
    return out


def repack(package_dir: Path, keys: PrivateKeys, edit: dict[str, dict] | None = None) -> Path:
    """Apply `{payload json file: {dotted.key: value}}` edits, then rebuild the manifest and re-sign."""
    for name, changes in (edit or {}).items():
        path = package_dir / "payload" / name
        data = json.loads(path.read_text())
        for dotted, value in changes.items():
            *parents, last = dotted.split(".")
            node = data
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = value
        path.write_text(json.dumps(data, indent=2))
    (package_dir / "manifest.json").write_bytes(manifest_bytes(build_manifest(package_dir / "payload")))
    sign_package(package_dir, keys)
    return package_dir


@pytest.fixture(name="repack")
def repack_fixture():
    """`repack(package_dir, keys, edit)`: edit payload JSON, rebuild the manifest, re-sign."""
    return repack
