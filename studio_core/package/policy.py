"""The promotion policy gate: rules over a package's verification, evidence and optimization profile.

`promote` evaluates every rule, writes a verification summary next to the package (an in-toto statement in
the shape of a SLSA Verification Summary Attestation) and, only when every rule passes, appends the package
to the local registry's channel, `<home>/registry/<channel>.json`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

import studio_core
from studio_core.config_io import read_json_file
from studio_core.errors import ConfigError, InputError, Problem, StudioError
from studio_core.package.keys import PublicKeys, load_public_keys
from studio_core.package.manifest import STATEMENT_TYPE
from studio_core.package.verify import PAYLOAD_DIR, VerifyReport, verify_package
from studio_core.runs import atomic_write_json, studio_home, utc_now

VSA_PREDICATE_TYPE = "https://slsa.dev/verification_summary/v1"
VERIFIER_ID = "https://github.com/peft-studio/peft-studio/verifier"
CHANNEL = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class Policy(BaseModel):
    """A promotion policy; a rule left at its default (None, False or empty) is not checked."""

    model_config = ConfigDict(extra="forbid")

    require_signature: bool = Field(True, description="Both signatures (Ed25519 and ML-DSA-65) must verify.")
    trusted_key_ids: list[str] = Field(
        default_factory=list,
        description="Key ids allowed to sign (full ids or unique prefixes of 8+ characters); empty trusts "
        "every public key the verifier was given.",
    )
    manifest_complete: bool = Field(True, description="No payload file missing, extra or changed.")
    max_epsilon: float | None = Field(None, gt=0, description="Differential privacy: largest epsilon allowed.")
    min_task_metric: float | None = Field(None, description="Smallest task metric of the tuned model allowed.")
    max_val_loss: float | None = Field(None, gt=0, description="Largest validation loss of the tuned model allowed.")
    require_2to4: bool = Field(False, description="The package must carry a verified 2:4 sparsity pattern.")
    max_onnx_parity_error: float | None = Field(
        None, gt=0, description="Largest relative error of the ONNX export against PyTorch allowed."
    )
    allowed_licenses: list[str] = Field(
        default_factory=list, description="Base model licences allowed (as the evidence's licenses.base_model "
        "states them, e.g. apache-2.0); empty: not checked.",
    )
    max_engine_parity_error: dict[str, float] = Field(
        default_factory=dict, description="Largest relative logit error against the merged model allowed per "
        "engine of step 10: keys 'onnx_kv' or 'gguf:<quant>' (e.g. {\"gguf:q8_0\": 0.1}); a named engine the "
        "package lacks fails.",
    )
    base_model_digest_allowlist: list[str] = Field(
        default_factory=list,
        description="sha256 digests of allowed base model weight files; every weight file must be listed.",
    )


class PolicyRefused(StudioError):
    """A package failed the policy gate; `result` holds every rule's outcome."""

    def __init__(self, result: PolicyResult):
        self.result = result
        super().__init__(result.refusal())


@dataclass
class RuleResult:
    name: str
    passed: bool
    detail: str


@dataclass
class PolicyResult:
    """Every active rule's outcome, plus the verification report they were judged on."""

    rules: list[RuleResult]
    verify: VerifyReport
    summary_path: str | None = None
    registry_path: str | None = None
    failing: list[RuleResult] = field(init=False)

    def __post_init__(self) -> None:
        self.failing = [r for r in self.rules if not r.passed]

    @property
    def passed(self) -> bool:
        return not self.failing

    def refusal(self) -> str:
        lines = "\n".join(f"  - {r.name}: {r.detail}" for r in self.failing)
        return f"policy refused the package ({len(self.failing)} failing rule(s)):\n{lines}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy JSON file; every problem is reported with its field name."""
    path = Path(path)
    data = read_json_file(path, "policy")
    try:
        return Policy.model_validate(data)
    except ValidationError as e:
        problems = [Problem(".".join(str(p) for p in item["loc"]) or str(path),
                            "unknown rule" if item["type"] == "extra_forbidden" else item["msg"])
                    for item in e.errors()]
        raise ConfigError(problems) from e


def _read_payload_json(package_dir: Path, name: str) -> dict[str, Any]:
    try:
        return json.loads((package_dir / PAYLOAD_DIR / name).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return {}


def _dig(data: Any, *keys: str) -> Any:
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def _rule_signature(policy: Policy, report: VerifyReport) -> RuleResult:
    failed = [f"{r.algorithm}: {r.detail}" for r in report.signatures.values() if not r.ok]
    if not report.signatures or failed or report.key_id is None:
        return RuleResult("require_signature", False, "; ".join(failed) or "the package is not validly signed")
    trusted = [t for t in policy.trusted_key_ids if len(t) >= 8 and report.key_id.startswith(t)]
    if policy.trusted_key_ids and not trusted:
        return RuleResult("require_signature", False, f"signed by key {report.key_id[:16]}, which is not in "
                                                      "trusted_key_ids")
    return RuleResult("require_signature", True, f"ed25519 and ml-dsa-65 verified, key {report.key_id[:16]}")


def _rule_manifest(report: VerifyReport) -> RuleResult:
    if report.subject_digest is None:
        return RuleResult("manifest_complete", False, "no readable manifest")
    bad = [f"missing {n}" for n in report.missing] + [f"extra {n}" for n in report.extra]
    bad += [f"changed {n}" for n in report.changed]
    detail = "; ".join(bad) if bad else "every payload file matches the manifest"
    return RuleResult("manifest_complete", not bad, detail)


def _threshold(name: str, value: Any, limit: float, at_most: bool, missing: str) -> RuleResult:
    if not isinstance(value, (int, float)):
        return RuleResult(name, False, missing)
    passed = value <= limit if at_most else value >= limit
    return RuleResult(name, passed, f"{value:.6g} {'<=' if at_most else '>='} {limit:g} required")


def _rule_2to4(profile: dict[str, Any]) -> RuleResult:
    sparsity = profile.get("sparsity") or {}
    if sparsity.get("pattern") != "2:4" or not sparsity.get("layers"):
        return RuleResult("require_2to4", False, f"no 2:4 sparsity in the package (pattern "
                                                 f"{sparsity.get('pattern')!r}); enable pruning (step 5)")
    if not sparsity.get("verified"):
        return RuleResult("require_2to4", False, "the 2:4 pattern is declared but was not verified")
    return RuleResult("require_2to4", True, f"2:4 verified on {len(sparsity['layers'])} layer(s)")


def _rule_base_model(policy: Policy, evidence: dict[str, Any]) -> RuleResult:
    weights = _dig(evidence, "base_model", "weight_sha256") or {}
    if not weights:
        return RuleResult("base_model_digest_allowlist", False, "the evidence carries no base model weight digests")
    outside = [f"{name} ({digest[:12]})" for name, digest in sorted(weights.items())
               if digest not in policy.base_model_digest_allowlist]
    detail = f"not allowed: {', '.join(outside)}" if outside else f"{len(weights)} weight file(s) allowed"
    return RuleResult("base_model_digest_allowlist", not outside, detail)


def _metric_rules(policy: Policy, evidence: dict[str, Any], profile: dict[str, Any]) -> list[RuleResult]:
    rules = []
    if policy.max_epsilon is not None:
        rules.append(_threshold("max_epsilon", _dig(evidence, "privacy", "epsilon"), policy.max_epsilon, True,
                                "no DP budget in the evidence: the run did not train with privacy on"))
    if policy.min_task_metric is not None:
        rules.append(_threshold("min_task_metric", _dig(evidence, "metrics", "evaluation", "tuned", "task", "value"),
                                policy.min_task_metric, False, "no task metric in the evidence: enable evaluation"))
    if policy.max_val_loss is not None:
        loss = _dig(evidence, "metrics", "evaluation", "tuned", "val_loss")
        loss = loss if loss is not None else _dig(evidence, "metrics", "best", "best_val_loss")
        rules.append(_threshold("max_val_loss", loss, policy.max_val_loss, True,
                                "no validation loss in the evidence: enable evaluation"))
    if policy.max_onnx_parity_error is not None:
        onnx = profile.get("onnx") or {}
        error = next((onnx[k] for k in ("max_relative_error", "parity_error", "relative_error") if k in onnx), None)
        rules.append(_threshold("max_onnx_parity_error", error, policy.max_onnx_parity_error, True,
                                "no ONNX parity figure in the package: enable export (step 9)"))
    rules += [_rule_engine_parity(name, bound, profile) for name, bound in sorted(policy.max_engine_parity_error.items())]
    return rules


def _rule_engine_parity(name: str, bound: float, profile: dict[str, Any]) -> RuleResult:
    """One engine's parity against the merged model, from the optimization profile's compile report."""
    generation = _dig(profile, "engine", "generation") or {}
    engine, _, quant = name.partition(":")
    parity = _dig(generation, engine, "parity") or {}
    error = _dig(parity, "quants", quant, "relative_error") if quant else parity.get("relative_error")
    return _threshold(f"max_engine_parity_error[{name}]", error, bound, True,
                      f"the package has no {name} engine (compile.engines and compile.gguf_quants choose them)")


def _rule_license(policy: Policy, evidence: dict[str, Any]) -> RuleResult:
    found = _dig(evidence, "licenses", "base_model")
    passed = found in policy.allowed_licenses
    return RuleResult("allowed_licenses", passed, f"base model licence {found!r} "
                      + ("allowed" if passed else f"not in {policy.allowed_licenses}"))


def evaluate_policy(package_dir: Path, policy: Policy, public_keys: list[PublicKeys]) -> PolicyResult:
    """Verify the package and judge every active rule of `policy`; nothing is written."""
    package_dir = Path(package_dir)
    report = verify_package(package_dir, public_keys)
    evidence = _read_payload_json(package_dir, "evidence.json")
    profile = _read_payload_json(package_dir, "optimization_profile.json")
    rules = []
    if policy.require_signature:
        rules.append(_rule_signature(policy, report))
    if policy.manifest_complete:
        rules.append(_rule_manifest(report))
    rules += _metric_rules(policy, evidence, profile)
    if policy.require_2to4:
        rules.append(_rule_2to4(profile))
    if policy.base_model_digest_allowlist:
        rules.append(_rule_base_model(policy, evidence))
    if policy.allowed_licenses:
        rules.append(_rule_license(policy, evidence))
    return PolicyResult(rules, report)


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verification_summary(package_dir: Path, policy_path: Path, channel: str, result: PolicyResult) -> dict[str, Any]:
    """A SLSA-VSA-shaped in-toto statement: verifier, time, policy digest, subject digest, each rule, verdict."""
    envelope = package_dir / "signature.dsse.json"
    attestations = [{"uri": envelope.name, "digest": {"sha256": _sha256_bytes(envelope.read_bytes())}}] \
        if envelope.is_file() else []
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": package_dir.name, "digest": {"sha256": result.verify.subject_digest}}],
        "predicateType": VSA_PREDICATE_TYPE,
        "predicate": {
            "verifier": {"id": VERIFIER_ID, "version": {"peft-studio": studio_core.__version__}},
            "timeVerified": utc_now(),
            "resourceUri": package_dir.resolve().as_uri(),
            "policy": {"uri": Path(policy_path).resolve().as_uri(),
                       "digest": {"sha256": _sha256_bytes(Path(policy_path).read_bytes())}},
            "inputAttestations": attestations,
            "verificationResult": "PASSED" if result.passed else "FAILED",
            "verifiedLevels": [],
            "channel": channel,
            "signerKeyId": result.verify.key_id,
            "rules": [asdict(r) for r in result.rules],
        },
    }


def summary_path(package_dir: Path) -> Path:
    """Where promote writes the verification summary: next to the package, `<package>.vsa.json`."""
    return Path(package_dir).parent / f"{Path(package_dir).name}.vsa.json"


def _record(home: Path, channel: str, entry: dict[str, Any]) -> Path:
    path = home / "registry" / f"{channel}.json"
    registry = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"channel": channel, "packages": []}
    registry["packages"].append(entry)
    atomic_write_json(path, registry)
    return path


def promote(package_dir: Path, policy_path: Path, channel: str, home: str | Path | None = None,
            public_keys: list[PublicKeys] | None = None) -> PolicyResult:
    """Judge a package against a policy file; record it in `<home>/registry/<channel>.json` only if all pass.

    Trusts the home's public keys unless `public_keys` is given. Always writes the verification summary
    (`summary_path(package_dir)`); on refusal `result.refusal()` lists every failing rule.
    """
    if not CHANNEL.match(channel):
        raise InputError(f"channel {channel!r}: use lower-case letters, digits, '.', '_' or '-', e.g. stable")
    home = studio_home(home)
    policy = load_policy(policy_path)
    keys = public_keys if public_keys is not None else load_public_keys(home)
    package_dir = Path(package_dir)
    result = evaluate_policy(package_dir, policy, keys)
    summary = verification_summary(package_dir, Path(policy_path), channel, result)
    atomic_write_json(summary_path(package_dir), summary)
    result.summary_path = str(summary_path(package_dir))
    if result.passed:
        entry = {"subject_digest": result.verify.subject_digest, "key_id": result.verify.key_id,
                 "package": str(package_dir.resolve()), "promoted_at": summary["predicate"]["timeVerified"],
                 "policy_sha256": summary["predicate"]["policy"]["digest"]["sha256"], "summary": result.summary_path}
        result.registry_path = str(_record(home, channel, entry))
    return result
