import json

import pytest

from studio_core.errors import ConfigError
from studio_core.package import Policy, evaluate_policy, generate_keys, load_policy, load_public_keys, promote
from studio_core.package.policy import summary_path

GOOD = {
    "max_epsilon": ("privacy", {"enabled": True, "epsilon": 3.0, "delta": 1e-5}, {"enabled": False}),
    "min_task_metric": ("metrics.evaluation.tuned.task.value", 0.9, None),
    "max_val_loss": ("metrics.evaluation.tuned.val_loss", 1.5, 9.0),
}


def rule(result, name):
    (found,) = [r for r in result.rules if r.name == name]
    return found


def test_signature_rule_passes_and_fails_on_untrusted_or_unsigned(package, home, tmp_path):
    keys = load_public_keys(home)
    assert rule(evaluate_policy(package, Policy(), keys), "require_signature").passed
    trusted = Policy(trusted_key_ids=[keys[0].key_id[:12]])
    assert rule(evaluate_policy(package, trusted, keys), "require_signature").passed
    other = Policy(trusted_key_ids=["00000000deadbeef"])
    assert "not in trusted_key_ids" in rule(evaluate_policy(package, other, keys), "require_signature").detail
    (package / "signature.dsse.json").unlink()
    assert not rule(evaluate_policy(package, Policy(), keys), "require_signature").passed


def test_manifest_complete_passes_and_fails(package, home):
    keys = load_public_keys(home)
    assert rule(evaluate_policy(package, Policy(), keys), "manifest_complete").passed
    (package / "payload" / "adapter" / "README.md").unlink()
    failed = rule(evaluate_policy(package, Policy(), keys), "manifest_complete")
    assert not failed.passed and failed.detail == "missing payload/adapter/README.md"


@pytest.mark.parametrize("name,limit", [("max_epsilon", 8.0), ("min_task_metric", 0.5), ("max_val_loss", 2.0)])
def test_metric_rules_pass_and_fail(package, home, keys, repack, name, limit):
    dotted, good, bad = GOOD[name]
    policy = Policy(**{name: limit})
    public = load_public_keys(home)
    repack(package, keys, {"evidence.json": {dotted: good}})
    assert rule(evaluate_policy(package, policy, public), name).passed
    repack(package, keys, {"evidence.json": {dotted: bad}})
    failed = rule(evaluate_policy(package, policy, public), name)
    assert not failed.passed and ("required" in failed.detail or "no " in failed.detail)


def test_epsilon_rule_names_missing_dp_budget(package, home):
    failed = rule(evaluate_policy(package, Policy(max_epsilon=8), load_public_keys(home)), "max_epsilon")
    assert not failed.passed and "privacy on" in failed.detail


def test_2to4_rule_passes_and_fails(package, home, keys, repack):
    policy, public = Policy(require_2to4=True), load_public_keys(home)
    failed = rule(evaluate_policy(package, policy, public), "require_2to4")
    assert not failed.passed and "no 2:4 sparsity" in failed.detail
    sparsity = {"pattern": "2:4", "layers": ["model.layers.0.mlp.up_proj"], "verified": True}
    repack(package, keys, {"optimization_profile.json": {"sparsity": sparsity}})
    assert rule(evaluate_policy(package, policy, public), "require_2to4").passed


def test_onnx_parity_rule_passes_and_fails(package, home, keys, repack):
    policy, public = Policy(max_onnx_parity_error=1e-4), load_public_keys(home)
    assert "enable export" in rule(evaluate_policy(package, policy, public), "max_onnx_parity_error").detail
    repack(package, keys, {"optimization_profile.json": {"onnx": {"max_relative_error": 9e-7}}})
    assert rule(evaluate_policy(package, policy, public), "max_onnx_parity_error").passed
    repack(package, keys, {"optimization_profile.json": {"onnx": {"max_relative_error": 0.2}}})
    assert not rule(evaluate_policy(package, policy, public), "max_onnx_parity_error").passed


def test_base_model_allowlist_passes_and_fails(package, home):
    digests = json.loads((package / "payload" / "evidence.json").read_text())["base_model"]["weight_sha256"]
    public = load_public_keys(home)
    allowed = Policy(base_model_digest_allowlist=list(digests.values()))
    assert rule(evaluate_policy(package, allowed, public), "base_model_digest_allowlist").passed
    other = Policy(base_model_digest_allowlist=["0" * 64])
    failed = rule(evaluate_policy(package, other, public), "base_model_digest_allowlist")
    assert not failed.passed and "model.safetensors" in failed.detail


def test_policy_file_errors_name_the_field(tmp_path):
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"max_epsilon": -1, "max_val_los": 2}))
    with pytest.raises(ConfigError) as e:
        load_policy(path)
    assert {p.field for p in e.value.problems} == {"max_epsilon", "max_val_los"}
    assert "unknown rule" in str(e.value)


def test_promote_records_only_when_every_rule_passes(package, home, tmp_path):
    strict = tmp_path / "strict.json"
    strict.write_text(json.dumps({"max_val_loss": 0.001, "require_2to4": True, "max_epsilon": 1}))
    refused = promote(package, strict, "stable", home)
    assert not refused.passed and [r.name for r in refused.failing] == ["max_epsilon", "max_val_loss", "require_2to4"]
    assert all(f"  - {r.name}: " in refused.refusal() for r in refused.failing)
    assert not (home / "registry" / "stable.json").exists()
    vsa = json.loads(summary_path(package).read_text())
    assert vsa["predicate"]["verificationResult"] == "FAILED" and len(vsa["predicate"]["rules"]) == 5

    lenient = tmp_path / "lenient.json"
    lenient.write_text(json.dumps({"max_val_loss": 100}))
    accepted = promote(package, lenient, "stable", home)
    assert accepted.passed
    promote(package, lenient, "stable", home)
    registry = json.loads((home / "registry" / "stable.json").read_text())
    assert len(registry["packages"]) == 2
    vsa = json.loads(summary_path(package).read_text())
    predicate = vsa["predicate"]
    assert predicate["verificationResult"] == "PASSED" and predicate["verifier"]["id"].startswith("https://")
    assert vsa["subject"][0]["digest"]["sha256"] == registry["packages"][0]["subject_digest"]
    assert predicate["policy"]["digest"]["sha256"] == registry["packages"][0]["policy_sha256"]


def test_promote_with_untrusted_home_refuses(package, tmp_path):
    policy = tmp_path / "p.json"
    policy.write_text("{}")
    generate_keys(tmp_path / "elsewhere")
    result = promote(package, policy, "stable", tmp_path / "elsewhere")
    assert [r.name for r in result.failing] == ["require_signature"]
