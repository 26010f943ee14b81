"""Pack a run into a TGSP package: payload (adapter and whatever else was built), evidence, profile, manifest.

Layout of `<run>/artifacts/package/`:
    payload/adapter/ merged/ sparse/ onnx/ engine/   copies of those artifacts that exist (the adapter is required)
    payload/evidence.json                     config, base model and data digests, metrics, DP budget, versions
    payload/optimization_profile.json         sparsity, the engine built, precision, ONNX parity
    manifest.json                             in-toto statement over payload/ (see manifest.py)
    signature.dsse.json                       written by sign.py
Nothing secret is copied: no environment variables; any config value whose key names a token, secret,
password, passphrase or key material is replaced by "<redacted>", and so is a secret inside any string (an API
token, `Bearer ...`, `?token=...` or `user:pass@` in a URL). Local files appear by name and digest, never by
absolute path.
"""

from __future__ import annotations

import gzip
import json
import platform
import re
import shutil
import tarfile
from importlib import metadata
from pathlib import Path
from typing import Any

import studio_core
from studio_core.errors import InputError
from studio_core.package.card import licenses
from studio_core.package.manifest import build_manifest, manifest_bytes
from studio_core.runs import RunDir, atomic_write_json, atomic_write_text

PAYLOAD_ARTIFACTS = ("adapter", "merged", "sparse", "onnx", "engine")  # sparse: 2:4 tensors compressed (step 5)
SECRET_KEY = re.compile(r"token|secret|passw|passphrase|api_?key|private_?key|credential|auth", re.IGNORECASE)
WINDOWS_PATH = re.compile(r"^[A-Za-z]:\\")
PRIVATE_KEY_BLOCK = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
REDACTED = "<redacted>"
# Secrets inside any string, each replaced by REDACTED where it stands (the rest of the string is kept).
SECRET_SPANS = (
    (re.compile(r"\b(?:hf|sk|ghp|gho|ghs|github_pat|glpat|xox[bpas])[_-][A-Za-z0-9_-]{8,}"), REDACTED),  # API tokens
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"), rf"\1{REDACTED}"),  # Authorization headers
    (re.compile(r"\b(Basic\s+)[A-Za-z0-9+/]{12,}={0,2}"), rf"\1{REDACTED}"),
    (re.compile(r"(?i)([?&;](?:[a-z0-9_.-]*(?:token|secret|passw|passphrase|api_?key|sig|signature|auth|"
                r"credential|code))=)[^&#\s\"']+"), rf"\1{REDACTED}"),  # ?token=... in a URL
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@\"']+:[^/\s@\"']*@"), rf"\1{REDACTED}@"),  # user:pass@ in a URL
)
SOFTWARE = ("torch", "transformers", "peft", "accelerate", "safetensors", "onnx", "onnxruntime", "opacus",
            "cryptography", "pydantic")
PRIVACY_KEYS = ("epsilon", "delta", "accountant", "noise_multiplier", "max_grad_norm", "sample_rate", "steps", "N",
                "poisson", "secure_mode", "unit", "target_epsilon", "logical_batch", "per_sample_gradients",
                "accountant_history", "stopped_at_budget")


def scrub(value: Any) -> Any:
    """A copy of `value` with secret-looking keys and values replaced by "<redacted>"."""
    if isinstance(value, dict):
        return {k: REDACTED if SECRET_KEY.search(str(k)) and v is not None else scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, str):
        return scrub_text(value)
    return value


def scrub_text(text: str) -> str:
    """`text` with every secret in it replaced by "<redacted>"; a private key block redacts the whole string."""
    if PRIVATE_KEY_BLOCK.search(text):
        return REDACTED
    for pattern, replacement in SECRET_SPANS:
        text = pattern.sub(replacement, text)
    return text


def local_paths_out(value: Any, run_dir: Path) -> Any:
    """A copy of `value` where each string that is an absolute local path becomes its path inside the run dir,
    or else its file name: evidence travels, and this machine's folder layout is not part of it."""
    if isinstance(value, dict):
        return {k: local_paths_out(v, run_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [local_paths_out(v, run_dir) for v in value]
    if isinstance(value, str) and "\n" not in value and (value.startswith(("/", "~")) or WINDOWS_PATH.match(value)):
        path = Path(value).expanduser()
        return path.relative_to(run_dir).as_posix() if path.is_relative_to(run_dir) else path.name
    return value


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _software_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version(), "studio_core": studio_core.__version__}
    for name in SOFTWARE:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _hardware() -> dict[str, Any] | None:
    from studio_core.hardware import hardware_profile

    return hardware_profile().model_dump()


def _base_model(artifacts: Path) -> dict[str, Any] | None:
    model = _read_json(artifacts / "model" / "model.json")
    if model is None:
        return None
    keep = ("ref", "kind", "revision", "model_type", "architectures", "weight_sha256", "tokenizer_sha256", "source")
    return scrub({k: model[k] for k in keep if k in model})  # the local cache path says nothing about the model


def _dataset(artifacts: Path) -> dict[str, Any] | None:
    report = _read_json(artifacts / "data" / "report.json")
    if report is None:
        return None
    sources = [{"file": Path(str(s.get("file"))).name, **{k: s.get(k) for k in ("row_schema", "sha256", "rows_valid",
                                                                                 "rows_bad")}}
               for s in report.get("sources", [])]  # by name and digest: the local path is not evidence
    return {"sha256": report.get("sha256"), "rows": report.get("rows"),
            "duplicates_removed": report.get("duplicates_removed"), "sources": scrub(sources)}


def _metrics(run: RunDir) -> dict[str, Any]:
    lines = run.metrics()
    last_train = next((m for m in reversed(lines) if "loss" in m), None)
    last_eval = next((m for m in reversed(lines) if "val_loss" in m), None)
    training = _read_json(run.artifacts / "training.json") or {}
    best = {k: training.get(k) for k in ("best_val_loss", "best_checkpoint", "best_checkpoint_val_loss")
            if k in training}
    return {"final": {"train": last_train, "eval": last_eval}, "best": best or None,
            "evaluation": _read_json(run.artifacts / "eval" / "metrics.json")}


def privacy_budget(config: dict[str, Any], artifacts: Path) -> dict[str, Any]:
    """The DP budget: `{"enabled": false}` when privacy is off, else every PRIVACY_KEYS value (null if unknown).

    The values come from `artifacts/privacy.json`, which DP training (`studio_core.privacy`) writes with those keys.
    """
    if not config.get("privacy", {}).get("enabled"):
        return {"enabled": False}
    spent = _read_json(artifacts / "privacy.json") or {}
    return {"enabled": True, **{k: spent.get(k) for k in PRIVACY_KEYS}}


def build_evidence(run_dir: Path) -> dict[str, Any]:
    """The evidence record of a run: what went in, how it was trained, what came out, and on what."""
    run = RunDir(Path(run_dir))
    config = run.config_data()
    status = run.read_status()
    return local_paths_out({
        "schema": "peft-studio/evidence/v1",
        "run_id": run.run_id,
        "simulated": bool(status.get("simulated", config.get("simulate"))),
        "started_at": status.get("started_at"),
        "finished_at": status.get("finished_at"),
        "config": scrub(config),
        "base_model": _base_model(run.artifacts),
        "dataset": _dataset(run.artifacts),
        "training": {"method": scrub(config.get("method")), "hyperparameters": scrub(config.get("training")),
                     "result": _read_json(run.artifacts / "training.json"),
                     "init": _read_json(run.artifacts / "training_init.json")},
        "metrics": _metrics(run),
        "privacy": privacy_budget(config, run.artifacts),
        "licenses": licenses(run.path),
        "software": _software_versions(),
        "hardware": _hardware(),
    }, run.path.resolve())


def _engine(artifacts: Path) -> dict[str, Any] | None:
    reports = sorted((artifacts / "engine").glob("*.json")) if (artifacts / "engine").is_dir() else []
    if reports:
        return _read_json(reports[0])
    return _read_json(artifacts / "compile.json")


def build_optimization_profile(run_dir: Path) -> dict[str, Any]:
    """Sparsity (pattern, layers, verified), the engine actually built, precision and ONNX parity.

    Reads `artifacts/pruning.json` ({"pattern": "2:4", "layers": [...], "verified": bool}), `artifacts/engine/*.json`
    or `artifacts/compile.json`, and `artifacts/onnx/export.json` (its `max_relative_error`) when those stages ran.
    """
    artifacts = Path(run_dir) / "artifacts"
    sparsity = _read_json(artifacts / "pruning.json") or {}
    init = _read_json(artifacts / "training_init.json") or {}
    return {
        "schema": "peft-studio/optimization-profile/v1",
        "sparsity": {"pattern": sparsity.get("pattern"), "layers": sparsity.get("layers", []),
                     "verified": bool(sparsity.get("verified", False)) and _all_checks_passed(sparsity),
                     **{k: sparsity[k] for k in ("method", "checks", "masks_sha256", "pruned_base_sha256", "speed")
                        if k in sparsity},
                     **({"compression": _compression(sparsity["compression"])} if "compression" in sparsity else {})},
        "engine": _engine(artifacts),
        "precision": init.get("precision"),
        "onnx": _read_json(artifacts / "onnx" / "export.json") or _read_json(artifacts / "export.json"),
    }


def _all_checks_passed(sparsity: dict[str, Any]) -> bool:
    """2:4 is verified only when the checks after pruning, training and merge all ran and found no violation."""
    checks = sparsity.get("checks") or {}
    wanted = ("after_pruning", "after_training", "after_merge")
    return all(checks.get(k, {}).get("violations") == 0 for k in wanted)


def _compression(report: dict[str, Any]) -> dict[str, Any]:
    keep = ("format", "file", "dense_bytes", "compressed_bytes", "ratio", "dense_bytes_16bit",
            "compressed_bytes_16bit", "ratio_16bit", "round_trip_exact")
    return {"path": f"sparse/{report.get('file')}", **{k: report.get(k) for k in keep}}


def _copy_payload(artifacts: Path, payload: Path) -> list[str]:
    if not (artifacts / "adapter").is_dir():
        raise InputError(f"no adapter in {artifacts}: the package needs a trained adapter; run training "
                         "(training.enabled=true) before packing")
    copied = []
    for name in PAYLOAD_ARTIFACTS:
        source = artifacts / name
        if source.is_dir():
            shutil.copytree(source, payload / name, symlinks=True)  # symlinks are kept so the manifest refuses them
            copied.append(name)
    return copied


def build_package(run_dir: Path, out: Path | None = None) -> Path:
    """Build the package of a run (default `<run>/artifacts/package`, replaced if present); returns its folder."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise InputError(f"{run_dir} is not a run directory (no config.json); `peft-studio runs` lists runs")
    out = Path(out) if out is not None else run_dir / "artifacts" / "package"
    if out.exists() and any(out.iterdir()) and not (out / "payload").is_dir():
        raise InputError(f"{out} exists and is not a package; choose an empty or new folder for the package")
    if out.exists():
        shutil.rmtree(out)
    payload = out / "payload"
    payload.mkdir(parents=True)
    _copy_payload(run_dir / "artifacts", payload)
    atomic_write_json(payload / "evidence.json", build_evidence(run_dir))
    atomic_write_json(payload / "optimization_profile.json", build_optimization_profile(run_dir))
    atomic_write_text(out / "manifest.json", manifest_bytes(build_manifest(payload)).decode("utf-8"))
    return out


def _tar_info(name: str, size: int = 0, is_dir: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.uid, info.gid, info.uname, info.gname = size, 0, 0, 0, "", ""
    info.type, info.mode = (tarfile.DIRTYPE, 0o755) if is_dir else (tarfile.REGTYPE, 0o644)
    return info


def export_archive(package_dir: Path, archive_path: Path) -> Path:
    """Write `package_dir` as a deterministic .tar.gz (sorted entries, zero mtimes, uid/gid 0, no gzip time)."""
    package_dir, archive_path = Path(package_dir), Path(archive_path)
    entries = sorted(package_dir.rglob("*"), key=lambda p: p.relative_to(package_dir).as_posix())
    archive_path.parent.mkdir(parents=True, exist_ok=True)
    with (open(archive_path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz,
          tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar):
        for path in entries:
            _add_entry(tar, path, f"package/{path.relative_to(package_dir).as_posix()}")
    return archive_path


def _add_entry(tar: tarfile.TarFile, path: Path, name: str) -> None:
    if path.is_symlink():
        raise InputError(f"{path} is a symlink; packages hold only regular files")
    if path.is_dir():
        tar.addfile(_tar_info(name, is_dir=True))
        return
    with open(path, "rb") as f:
        tar.addfile(_tar_info(name, path.stat().st_size), f)
