"""A simulated run with pruning: 0 violations after pruning, training and merge, the adapter pinned to the pruned
base, the merged model stored compressed, and a package the require_2to4 rule passes; a tampered merged tensor
fails the merge check."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from studio_core import workflow
from studio_core.config import validate_config
from studio_core.context import CancelSignal, RunContext
from studio_core.package import generate_keys, load_public_keys
from studio_core.package.policy import Policy, evaluate_policy
from studio_core.runs import RunDir
from studio_core.sparsity import run as sparsity
from studio_core.sparsity.pattern import violations


@pytest.fixture(scope="module")
def pruned_run(tmp_path_factory):
    home = tmp_path_factory.mktemp("pruned-home")
    generate_keys(home)
    config = validate_config({
        "simulate": True, "model": {"ref": "tiny-random:llama"}, "data": {"demo_rows": 100},
        "preflight": {"enabled": False}, "method": {"name": "lora", "r": 4},
        "pruning": {"enabled": True, "method": "wanda", "calibration_rows": 8},
        "training": {"max_steps": 4, "eval_steps": 2, "learning_rate": 5e-3, "precision": "fp32"},
        "evaluation": {"enabled": False}, "package": {"enabled": True}, "signing": {"enabled": True},
    })
    return workflow.run(config, home), home


def test_pruned_run_has_zero_violations_after_merge(pruned_run):
    run, _ = pruned_run
    assert run.read_status()["stages"]["pruning_init"]["state"] == "completed"
    report = json.loads((run.artifacts / "pruning.json").read_text())
    assert report["verified"] and report["method"] == "wanda" and report["calibration_rows"] == 8
    assert {k: v["violations"] for k, v in report["checks"].items()} == \
        {"after_pruning": 0, "after_training": 0, "after_merge": 0}
    merged = load_file(str(run.artifacts / "merged" / "model.safetensors"))
    pruned = [f"{layer['name']}.weight" for layer in report["layers"]]
    assert len(pruned) == 14 and all(violations(merged[n]) == 0 for n in pruned)
    assert all(abs(float((merged[n] == 0).float().mean()) - 0.5) < 0.01 for n in pruned)
    assert violations(merged["model.embed_tokens.weight"]) > 0  # never pruned
    assert report["compression"]["round_trip_exact"] and report["compression"]["ratio_16bit"] <= 0.57


def test_adapter_pins_the_pruned_base_and_says_stock_peft_is_unmasked(pruned_run):
    run, _ = pruned_run
    adapter = run.artifacts / "adapter"
    pinned = json.loads((adapter / "base_model.json").read_text())["pruned_base"]
    record = json.loads((run.artifacts / "sparsity" / "pruned.json").read_text())
    assert pinned["sha256"] == record["pruned_base_sha256"] and pinned["masks_sha256"] == record["masks_sha256"]
    assert (adapter / pinned["masks_file"]).is_file()
    assert "Stock peft applies the update unmasked" in (adapter / "README.md").read_text()


def test_package_ships_the_compressed_model_and_passes_require_2to4(pruned_run):
    run, home = pruned_run
    payload = run.artifacts / "package" / "payload"
    profile = json.loads((payload / "optimization_profile.json").read_text())["sparsity"]
    assert profile["pattern"] == "2:4" and profile["verified"] and len(profile["layers"]) == 14
    assert (payload / profile["compression"]["path"]).is_file() and "no speed-up" in profile["speed"]
    result = evaluate_policy(run.artifacts / "package", Policy(require_2to4=True), load_public_keys(home))
    assert result.passed, result.refusal()


def test_a_tampered_merged_tensor_fails_the_merge_check(pruned_run, tmp_path):
    run, home = pruned_run
    copy = RunDir(shutil.copytree(run.path, tmp_path / run.path.name))
    ctx = RunContext(validate_config(copy.config_data()), copy, home, CancelSignal())
    file = copy.artifacts / "merged" / "model.safetensors"
    state = load_file(str(file))
    sparsity.check_merged(ctx, file.parent)  # intact: passes
    name = "model.layers.1.mlp.down_proj.weight"
    row = state[name][3]
    zero = int(torch.nonzero(row[:4] == 0)[0])
    row[zero] = 0.5  # a third non-zero in the group
    save_file(state, str(file))
    with pytest.raises(sparsity.SparsityViolation, match=r"after merge: 1 group\(s\).*down_proj"):
        sparsity.check_merged(ctx, file.parent)
