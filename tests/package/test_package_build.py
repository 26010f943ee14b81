import hashlib
import json
import shutil

import pytest

from studio_core.errors import InputError
from studio_core.package import build_package, export_archive, generate_keys, load_private_keys, sign_package
from studio_core.package.build import scrub


def read(package, name):
    return json.loads((package / "payload" / name).read_text())


def test_layout_evidence_and_profile(package, trained_run):
    assert sorted(p.name for p in package.iterdir()) == ["manifest.json", "payload", "signature.dsse.json"]
    assert sorted(p.name for p in (package / "payload").iterdir()) == [
        "adapter", "evidence.json", "merged", "optimization_profile.json"]
    evidence = read(package, "evidence.json")
    model = json.loads((trained_run / "artifacts/model/model.json").read_text())
    data = json.loads((trained_run / "artifacts/data/report.json").read_text())
    assert evidence["base_model"]["weight_sha256"] == model["weight_sha256"] and "path" not in evidence["base_model"]
    assert evidence["dataset"]["sha256"] == data["sha256"] and evidence["dataset"]["rows"] == {"train": 108, "val": 12}
    assert evidence["training"]["hyperparameters"]["max_steps"] == 2 and evidence["training"]["method"]["r"] == 16
    assert evidence["metrics"]["final"]["train"]["step"] == 2
    assert evidence["metrics"]["best"]["best_val_loss"] > 0 and evidence["metrics"]["evaluation"]["tuned"]["val_loss"]
    assert evidence["privacy"] == {"enabled": False}
    assert {"python", "torch", "transformers", "peft", "studio_core", "onnxruntime"} <= evidence["software"].keys()
    assert evidence["hardware"]["cpu_cores_logical"] >= 1 and evidence["simulated"] is False
    assert evidence["started_at"] < evidence["finished_at"]
    profile = read(package, "optimization_profile.json")
    assert profile["sparsity"] == {"pattern": None, "layers": [], "verified": False}
    assert profile["engine"] is None and profile["precision"] == "fp32"


def test_adapter_is_required(run_copy, tmp_path):
    shutil.rmtree(run_copy / "artifacts" / "adapter")
    with pytest.raises(InputError, match="no adapter .*run training"):
        build_package(run_copy)


def test_no_secret_anywhere_in_the_package(run_copy, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret123")
    passphrase = "correct horse battery staple"
    info = generate_keys(tmp_path / "home", passphrase=passphrase)
    package = build_package(run_copy)
    sign_package(package, load_private_keys(tmp_path / "home", info.key_id, passphrase))
    export_archive(package, tmp_path / "package.tar.gz")
    files = [p for p in package.rglob("*") if p.is_file()] + [tmp_path / "package.tar.gz"]
    for path in files:
        data = path.read_bytes()
        for secret in (b"hf_secret123", passphrase.encode(), b"PRIVATE KEY"):
            assert secret not in data, f"{secret!r} in {path}"


def test_scrub_redacts_secret_keys_and_values():
    data = {"hub_token": "abc", "nested": {"Password": "x", "api_key": "y", "key_id": "ok"},
            "values": ["hf_abcdefgh1234", "-----BEGIN PRIVATE KEY-----..."], "max_steps": 3}
    assert scrub(data) == {"hub_token": "<redacted>", "nested": {"Password": "<redacted>", "api_key": "<redacted>",
                                                                  "key_id": "ok"},
                           "values": ["<redacted>", "<redacted>"], "max_steps": 3}


def test_archive_is_deterministic(package, tmp_path):
    a = export_archive(package, tmp_path / "a.tar.gz")
    (package / "manifest.json").touch()  # a new mtime must not change the archive
    b = export_archive(package, tmp_path / "b.tar.gz")
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()


@pytest.mark.parametrize("text,expected", [
    ("https://hub.example/x?token=abc123&rev=main", "https://hub.example/x?token=<redacted>&rev=main"),
    ("https://u:p4ss@host/data.jsonl", "https://<redacted>@host/data.jsonl"),
    ("header Authorization: Bearer eyJhbGciOi.xyz", "header Authorization: Bearer <redacted>"),
    ("download with hf_abcdefgh12345678 failed", "download with <redacted> failed"),
    ("s3://b/k?X-Amz-Signature=deadbeef01&X-Amz-Credential=AKIA/x",
     "s3://b/k?X-Amz-Signature=<redacted>&X-Amz-Credential=<redacted>"),
    ("token embeddings and basic configuration stay", "token embeddings and basic configuration stay"),
])
def test_scrub_finds_secrets_inside_strings(text, expected):
    assert scrub({"note": text}) == {"note": expected}


def test_evidence_names_data_files_by_name_and_digest_not_path(run_copy, tmp_path):
    from studio_core.package.build import build_evidence

    data_file = tmp_path / "private" / "corpora" / "contracts.jsonl"
    config = json.loads((run_copy / "config.json").read_text())
    config["data"]["path"], config["evaluation"]["test_path"] = str(data_file), str(run_copy / "artifacts" / "t.jsonl")
    (run_copy / "config.json").write_text(json.dumps(config))
    report_path = run_copy / "artifacts/data/report.json"
    report = json.loads(report_path.read_text())
    report["sources"][0]["file"] = str(data_file)
    report_path.write_text(json.dumps(report))
    evidence = build_evidence(run_copy)
    assert str(tmp_path) not in json.dumps(evidence)  # no absolute local path of this machine
    assert evidence["dataset"]["sources"][0]["file"] == "contracts.jsonl"
    assert evidence["dataset"]["sources"][0]["sha256"] == report["sources"][0]["sha256"]
    assert evidence["config"]["data"]["path"] == "contracts.jsonl"
    assert evidence["config"]["evaluation"]["test_path"] == "artifacts/t.jsonl"  # inside the run: relative to it
