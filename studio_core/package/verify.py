"""Verify a package: both signatures over the manifest, and every payload file's digest recomputed from disk."""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature

from studio_core.digest import sha256_file
from studio_core.errors import InputError
from studio_core.package.keys import PublicKeys
from studio_core.package.manifest import (
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    payload_files,
    statement_digests,
    subject_digest,
)
from studio_core.package.sign import ALGORITHMS, ENVELOPE_FILE, MANIFEST_FILE, PAYLOAD_TYPE, envelope_text, pae

PAYLOAD_DIR = "payload"


@dataclass
class SignatureResult:
    """One algorithm's signature: who signed, whether it verified, and why not."""

    algorithm: str
    keyid: str | None = None
    ok: bool = False
    detail: str = "absent"


@dataclass
class VerifyReport:
    """Everything verification found; `ok` only when there is no reason to refuse the package."""

    package: str
    ok: bool = False
    key_id: str | None = None
    subject_digest: str | None = None
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    signatures: dict[str, SignatureResult] = field(default_factory=dict)
    manifest_matches_envelope: bool = False
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _strict_b64(text: Any) -> bytes:
    """Decode base64 that is spelled the one way we write it (no alternative encodings of the same bytes)."""
    if not isinstance(text, str):
        raise TypeError("not a string")
    data = base64.b64decode(text, validate=True)
    if base64.b64encode(data).decode("ascii") != text:
        raise ValueError("non-canonical base64")
    return data


def _read_envelope(package_dir: Path, report: VerifyReport) -> dict[str, Any] | None:
    path = package_dir / ENVELOPE_FILE
    if not path.is_file():
        report.reasons.append(f"{ENVELOPE_FILE} is missing: the package is not signed (sign it first)")
        return None
    try:
        text = path.read_text(encoding="utf-8")
        envelope = json.loads(text)
        assert_shape = set(envelope) == {"payloadType", "payload", "signatures"}
        signatures_ok = isinstance(envelope["signatures"], list) and all(
            isinstance(s, dict) and set(s) == {"keyid", "algorithm", "sig"}
            and all(isinstance(v, str) for v in s.values())
            for s in envelope["signatures"])  # strings only: a list or object as a key id once crashed the checks
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError, KeyError) as e:
        report.reasons.append(f"{ENVELOPE_FILE} is not a readable DSSE envelope ({type(e).__name__}): it was edited")
        return None
    if not (assert_shape and signatures_ok) or envelope_text(envelope) != text:
        report.reasons.append(f"{ENVELOPE_FILE} is not in the form the studio writes: it was edited")
        return None
    return envelope


def _envelope_payload(envelope: dict[str, Any], manifest: bytes | None, report: VerifyReport) -> bytes | None:
    if envelope["payloadType"] != PAYLOAD_TYPE:
        report.reasons.append(f"envelope payloadType is {envelope['payloadType']!r}, expected {PAYLOAD_TYPE!r}")
    try:
        payload = _strict_b64(envelope["payload"])
    except (TypeError, ValueError):
        report.reasons.append("envelope payload is not valid base64: the envelope was edited")
        return None
    report.manifest_matches_envelope = manifest is not None and payload == manifest
    if manifest is not None and not report.manifest_matches_envelope:
        report.reasons.append(f"{MANIFEST_FILE} differs from the signed manifest in {ENVELOPE_FILE}: one was edited")
    return payload


def _check_signature(sig: dict[str, Any], message: bytes, trusted: dict[str, PublicKeys]) -> SignatureResult:
    result = SignatureResult(sig["algorithm"], sig["keyid"])
    key = trusted.get(sig["keyid"]) if isinstance(sig["keyid"], str) else None
    if key is None:
        result.detail = f"signed by key {str(sig['keyid'])[:16]}, which is not among the trusted public keys"
        return result
    public = key.ed25519 if sig["algorithm"] == "ed25519" else key.mldsa65
    try:
        public.verify(_strict_b64(sig["sig"]), message)
    except (InvalidSignature, TypeError, ValueError):
        result.detail = f"does not verify with key {key.key_id[:16]}"
        return result
    result.ok, result.detail = True, "verified"
    return result


def _check_signatures(envelope: dict[str, Any], payload: bytes, keys: list[PublicKeys], report: VerifyReport) -> None:
    trusted = {k.key_id: k for k in keys}
    message = pae(str(envelope["payloadType"]), payload)
    for sig in envelope["signatures"]:
        if sig["algorithm"] not in ALGORITHMS:
            report.reasons.append(f"envelope holds a signature of unknown algorithm {sig['algorithm']!r}")
        elif sig["algorithm"] in report.signatures:
            report.reasons.append(f"envelope holds two {sig['algorithm']} signatures")
        else:
            report.signatures[sig["algorithm"]] = _check_signature(sig, message, trusted)
    for algorithm in ALGORITHMS:
        result = report.signatures.setdefault(algorithm, SignatureResult(algorithm))
        if not result.ok:
            report.reasons.append(f"{algorithm} signature failed: {result.detail}")
    keyids = {r.keyid for r in report.signatures.values()}
    if len(keyids) > 1:
        report.reasons.append("the ed25519 and ml-dsa-65 signatures come from different keys: one was replaced")
    elif all(r.ok for r in report.signatures.values()):
        report.key_id = keyids.pop()


def _parse_statement(data: bytes, report: VerifyReport) -> dict[str, str] | None:
    try:
        statement = json.loads(data)
        digests = statement_digests(statement)
        if statement["_type"] != STATEMENT_TYPE or statement["predicateType"] != PREDICATE_TYPE:
            raise InputError("wrong statement _type or predicateType")
        report.subject_digest = statement["subject"][0]["digest"]["sha256"]
        recomputed = subject_digest(statement["predicate"]["resources"])
    except (UnicodeDecodeError, ValueError, KeyError, IndexError, TypeError, InputError) as e:
        report.reasons.append(f"the manifest is not a valid in-toto statement: {e}")
        return None
    if recomputed != report.subject_digest:
        report.reasons.append("the manifest's subject digest does not match its resources: the manifest was edited")
    return digests


def _check_files(package_dir: Path, expected: dict[str, str], report: VerifyReport) -> None:
    payload = package_dir / PAYLOAD_DIR
    try:
        on_disk = set(payload_files(payload))
    except InputError as e:
        report.reasons.append(str(e))
        return
    report.missing = [f"{PAYLOAD_DIR}/{n}" for n in expected if n not in on_disk]
    report.extra = [f"{PAYLOAD_DIR}/{n}" for n in sorted(on_disk - set(expected))]
    report.changed = [f"{PAYLOAD_DIR}/{n}" for n in expected if n in on_disk and sha256_file(payload / n) != expected[n]]
    report.extra += sorted(p.name for p in package_dir.iterdir() if p.name not in (PAYLOAD_DIR, MANIFEST_FILE,
                                                                                     ENVELOPE_FILE))
    report.reasons += [f"missing file: {n}" for n in report.missing]
    report.reasons += [f"extra file not in the manifest: {n}" for n in report.extra]
    report.reasons += [f"changed file (sha256 differs from the manifest): {n}" for n in report.changed]


def verify_package(package_dir: Path, public_keys: list[PublicKeys]) -> VerifyReport:
    """Check both signatures with the trusted `public_keys` and recompute every payload digest from disk."""
    package_dir = Path(package_dir)
    report = VerifyReport(str(package_dir))
    if not package_dir.is_dir():
        report.reasons.append(f"{package_dir} is not a package folder")
        return report
    manifest_path = package_dir / MANIFEST_FILE
    manifest = manifest_path.read_bytes() if manifest_path.is_file() else None
    if manifest is None:
        report.reasons.append(f"{MANIFEST_FILE} is missing")
    if not public_keys:
        report.reasons.append("no trusted public keys: pass --public-key FILE or generate keys in the home")
    envelope = _read_envelope(package_dir, report)
    payload = _envelope_payload(envelope, manifest, report) if envelope else None
    if envelope and payload is not None:
        _check_signatures(envelope, payload, public_keys, report)
    statement_source = payload if payload is not None else manifest
    expected = _parse_statement(statement_source, report) if statement_source is not None else None
    if expected is not None:
        _check_files(package_dir, expected, report)
    report.ok = not report.reasons
    return report
