"""Steps 11-12 through the CLI: package, sign, verify, tamper, promote by policy."""

import json
from pathlib import Path

import pytest

from studio_core.cli import main
from studio_core.runs import RunStore

RUN = ["run", "--simulate", "--model", "tiny-random:llama", "--set", "package.enabled=true",
       "--set", "signing.enabled=true", "--set", "preflight.enabled=false", "--set", "data.demo_rows=100"]


@pytest.fixture(scope="module")
def signed_run(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    assert main(["keys", "generate", "--home", str(home)]) == 0
    assert main([*RUN, "--home", str(home)]) == 0
    return home, RunStore(home).list()[0]


def test_signing_without_a_key_says_how_to_make_one(tmp_path, capsys):
    assert main([*RUN, "--home", str(tmp_path)]) == 2
    assert "peft-studio keys generate" in capsys.readouterr().err
    (run,) = RunStore(tmp_path).list()
    assert run.read_status()["stages"]["evidence_signing"]["state"] == "failed"


def test_signed_package_verifies_and_a_flipped_byte_is_named(signed_run, capsys, tmp_path):
    home, run = signed_run
    assert json.loads((run.artifacts / "signing.json").read_text())["ok"] is True
    assert main(["verify", str(run.path), "--home", str(home)]) == 0
    assert "verified" in capsys.readouterr().out
    pem = tmp_path / "signer.pem"
    assert main(["keys", "export", "--out", str(pem), "--home", str(home)]) == 0
    assert main(["verify", str(run.artifacts / "package"), "--public-key", str(pem), "--home", str(tmp_path)]) == 0
    copy = tmp_path / "package"
    import shutil

    shutil.copytree(run.artifacts / "package", copy)
    weights = next((copy / "payload" / "adapter").glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["verify", str(copy), "--home", str(home)]) == 1
    assert "payload/adapter/adapter_model.safetensors" in capsys.readouterr().err


def test_promote_records_only_when_every_rule_passes(signed_run, capsys, tmp_path):
    home, run = signed_run
    loose, strict = tmp_path / "loose.json", tmp_path / "strict.json"
    loose.write_text(json.dumps({"require_signature": True, "manifest_complete": True, "max_val_loss": 100.0}))
    strict.write_text(json.dumps({"require_signature": True, "max_val_loss": 0.001, "require_2to4": True}))
    assert main(["promote", str(run.path), "--policy", str(strict), "--channel", "stable", "--home", str(home)]) == 1
    err = capsys.readouterr().err
    assert "max_val_loss" in err and "require_2to4" in err
    assert not (home / "registry" / "stable.json").exists()
    assert main(["promote", str(run.path), "--policy", str(loose), "--channel", "stable", "--home", str(home)]) == 0
    registry = json.loads((Path(home) / "registry" / "stable.json").read_text())
    assert registry["channel"] == "stable"
    assert registry["packages"][-1]["package"] == str((run.artifacts / "package").resolve())
