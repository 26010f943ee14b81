"""A DSSE envelope over the package manifest, with a hybrid signature: Ed25519 and ML-DSA-65.

Both signatures are over the DSSE pre-authentication encoding (PAE) of the manifest bytes:
`"DSSEv1" SP len(type) SP type SP len(body) SP body` (https://github.com/secure-systems-lab/dsse).
Each signature carries the hybrid key id and an `algorithm` field; a verifier needs both to pass.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from studio_core.errors import InputError
from studio_core.package.keys import PrivateKeys
from studio_core.runs import atomic_write_text

PAYLOAD_TYPE = "application/vnd.in-toto+json"
ENVELOPE_FILE = "signature.dsse.json"
MANIFEST_FILE = "manifest.json"
ALGORITHMS = ("ed25519", "ml-dsa-65")


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding of a payload and its type."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def sign_bytes(payload: bytes, keys: PrivateKeys, payload_type: str = PAYLOAD_TYPE) -> dict[str, Any]:
    """A DSSE envelope over `payload` with one Ed25519 and one ML-DSA-65 signature."""
    message = pae(payload_type, payload)
    signatures = [
        {"keyid": keys.key_id, "algorithm": "ed25519", "sig": b64(keys.ed25519.sign(message))},
        {"keyid": keys.key_id, "algorithm": "ml-dsa-65", "sig": b64(keys.mldsa65.sign(message))},
    ]
    return {"payloadType": payload_type, "payload": b64(payload), "signatures": signatures}


def envelope_text(envelope: dict[str, Any]) -> str:
    """The one canonical text of an envelope on disk; a verifier refuses any other spelling of it."""
    return json.dumps(envelope, indent=2, sort_keys=True) + "\n"


def sign_package(package_dir: Path, keys: PrivateKeys) -> Path:
    """Sign `package_dir/manifest.json`; writes and returns `package_dir/signature.dsse.json`."""
    manifest = Path(package_dir) / MANIFEST_FILE
    if not manifest.is_file():
        raise InputError(f"{manifest} not found; build the package first (`build_package(run_dir)`)")
    envelope = sign_bytes(manifest.read_bytes(), keys)
    out = Path(package_dir) / ENVELOPE_FILE
    atomic_write_text(out, envelope_text(envelope))
    return out
