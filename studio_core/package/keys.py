"""Hybrid signing keys: one Ed25519 and one ML-DSA-65 (FIPS 204) key pair, stored under `<home>/keys/<key_id>/`.

Files: `ed25519.key.pem` and `mldsa65.key.pem` (PKCS8 PEM, encrypted with the passphrase when one is given,
mode 0600), `ed25519.pub.pem` and `mldsa65.pub.pem` (SubjectPublicKeyInfo PEM) and `key.json` (id, created,
encrypted). The key id is the sha256 hex of the Ed25519 raw public key (32 bytes) followed by the ML-DSA-65
raw public key (1952 bytes). Private key objects never appear in a repr, a log or an error message.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, mldsa

from studio_core.errors import InputError
from studio_core.runs import atomic_write_json, studio_home, utc_now

PRIVATE_FILES = {"ed25519": "ed25519.key.pem", "mldsa65": "mldsa65.key.pem"}
PUBLIC_FILES = {"ed25519": "ed25519.pub.pem", "mldsa65": "mldsa65.pub.pem"}
PEM_BLOCK = re.compile(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----\s*", re.DOTALL)


@dataclass(frozen=True)
class KeyInfo:
    """What is safe to show about a key: its id, folder, creation time and whether it is encrypted."""

    key_id: str
    path: Path
    created: str
    encrypted: bool


@dataclass(frozen=True)
class PublicKeys:
    """The two public halves of a hybrid key."""

    key_id: str
    ed25519: ed25519.Ed25519PublicKey = field(repr=False)
    mldsa65: mldsa.MLDSA65PublicKey = field(repr=False)


@dataclass(frozen=True)
class PrivateKeys:
    """The two private halves of a hybrid key; the repr shows the key id only."""

    key_id: str
    ed25519: ed25519.Ed25519PrivateKey = field(repr=False)
    mldsa65: mldsa.MLDSA65PrivateKey = field(repr=False)

    def public(self) -> PublicKeys:
        return PublicKeys(self.key_id, self.ed25519.public_key(), self.mldsa65.public_key())


def compute_key_id(ed_pub: ed25519.Ed25519PublicKey, ml_pub: mldsa.MLDSA65PublicKey) -> str:
    """sha256 hex of the Ed25519 raw public key bytes followed by the ML-DSA-65 raw public key bytes."""
    return hashlib.sha256(ed_pub.public_bytes_raw() + ml_pub.public_bytes_raw()).hexdigest()


def keys_dir(home: str | Path | None = None) -> Path:
    return studio_home(home) / "keys"


def _write_private(path: Path, data: bytes) -> None:
    # Created 0600 from the start: the key never exists on disk with wider permissions.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def _public_pem(key: ed25519.Ed25519PublicKey | mldsa.MLDSA65PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def generate_keys(home: str | Path | None = None, passphrase: str | None = None) -> KeyInfo:
    """Generate a hybrid Ed25519 + ML-DSA-65 key pair under `<home>/keys/<key_id>/`; returns its KeyInfo."""
    keys = PrivateKeys("", ed25519.Ed25519PrivateKey.generate(), mldsa.MLDSA65PrivateKey.generate())
    key_id = compute_key_id(keys.ed25519.public_key(), keys.mldsa65.public_key())
    folder = keys_dir(home) / key_id
    folder.mkdir(parents=True, mode=0o700)
    encryption = (serialization.BestAvailableEncryption(passphrase.encode("utf-8")) if passphrase
                  else serialization.NoEncryption())
    for name, key in (("ed25519", keys.ed25519), ("mldsa65", keys.mldsa65)):
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
        _write_private(folder / PRIVATE_FILES[name], pem)
        (folder / PUBLIC_FILES[name]).write_bytes(_public_pem(key.public_key()))
    info = KeyInfo(key_id, folder, utc_now(), bool(passphrase))
    atomic_write_json(folder / "key.json", {"key_id": key_id, "created": info.created, "encrypted": info.encrypted})
    return info


def _read_info(folder: Path) -> KeyInfo:
    meta = json.loads((folder / "key.json").read_text(encoding="utf-8"))
    return KeyInfo(meta["key_id"], folder, meta["created"], meta["encrypted"])


def list_keys(home: str | Path | None = None) -> list[KeyInfo]:
    """Every key in `<home>/keys`, oldest first."""
    root = keys_dir(home)
    folders = [p for p in root.iterdir() if (p / "key.json").is_file()] if root.is_dir() else []
    return sorted((_read_info(p) for p in folders), key=lambda k: (k.created, k.key_id))


def find_key(home: str | Path | None = None, key_id: str | None = None) -> KeyInfo:
    """The key `key_id` (a unique prefix is enough), or the only key in the home when `key_id` is None."""
    keys = list_keys(home)
    if not keys:
        raise InputError(f"no signing key in {keys_dir(home)}; create one with `peft-studio keys generate`")
    if key_id is None:
        if len(keys) > 1:
            raise InputError(f"{len(keys)} keys in {keys_dir(home)}; choose one with signing.key_id "
                             f"({', '.join(k.key_id[:12] for k in keys)})")
        return keys[0]
    matches = [k for k in keys if k.key_id.startswith(key_id)]
    if len(matches) != 1:
        raise InputError(f"key id {key_id!r} matches {len(matches)} keys in {keys_dir(home)}; "
                         "`peft-studio keys list` shows them")
    return matches[0]


def check_private_file(path: Path) -> None:
    """Refuse a private key file that group or others may read or write, as ssh does; names the fix."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise InputError(f"private key {path} is accessible by other users (mode {mode:o}), so it may have been "
                         f"copied; refusing to use it. Run `chmod 600 {path}` if you trust it, else generate a new key")


def require_encrypted_when_shared(info: KeyInfo) -> None:
    """A shared studio signs only with a passphrase-protected key: anyone with its token could use a plain one."""
    from studio_core.roots import is_shared

    if is_shared() and not info.encrypted:
        raise InputError(f"key {info.key_id[:12]} is not encrypted, and a shared studio signs only with a key that "
                         "has a passphrase (entered at Start): create one with "
                         "`peft-studio keys generate --passphrase-env VAR` and choose it with signing.key_id")


def _load_private(path: Path, passphrase: str | None) -> ed25519.Ed25519PrivateKey | mldsa.MLDSA65PrivateKey:
    check_private_file(path)
    secret = passphrase.encode("utf-8") if passphrase else None
    try:
        return serialization.load_pem_private_key(path.read_bytes(), secret)
    except TypeError:  # encrypted without a passphrase, or a passphrase for an unencrypted key
        hint = "it is encrypted: give its passphrase" if secret is None else "it is not encrypted: omit the passphrase"
        raise InputError(f"cannot load private key {path.name} of {path.parent.name[:12]}: {hint}") from None
    except ValueError:
        raise InputError(f"cannot load private key {path.name} of {path.parent.name[:12]}: wrong passphrase "
                         "or damaged file") from None


def load_private_keys(home: str | Path | None = None, key_id: str | None = None,
                      passphrase: str | None = None) -> PrivateKeys:
    """Load the private halves of key `key_id` (or the home's only key), decrypting with `passphrase`.

    Refused: a private file others can read (`chmod 600` fixes it), and an unencrypted key in a shared studio.
    """
    info = find_key(home, key_id)
    require_encrypted_when_shared(info)
    ed = _load_private(info.path / PRIVATE_FILES["ed25519"], passphrase)
    ml = _load_private(info.path / PRIVATE_FILES["mldsa65"], passphrase)
    if not isinstance(ed, ed25519.Ed25519PrivateKey) or not isinstance(ml, mldsa.MLDSA65PrivateKey):
        raise InputError(f"key folder {info.path} holds keys of the wrong types; generate a new key")
    keys = PrivateKeys(info.key_id, ed, ml)
    if compute_key_id(ed.public_key(), ml.public_key()) != info.key_id:
        raise InputError(f"key folder {info.path} does not match its id; it was altered, generate a new key")
    return keys


def public_keys_from_pem(data: bytes, source: str = "") -> PublicKeys:
    """Parse a PEM bundle holding one Ed25519 and one ML-DSA-65 public key (in either order)."""
    found: dict[str, object] = {}
    for block in PEM_BLOCK.findall(data):
        key = serialization.load_pem_public_key(block)
        name = "ed25519" if isinstance(key, ed25519.Ed25519PublicKey) else "mldsa65"
        if name == "mldsa65" and not isinstance(key, mldsa.MLDSA65PublicKey):
            raise InputError(f"{source}: holds a {type(key).__name__}; expected Ed25519 and ML-DSA-65 keys")
        found[name] = key
    if set(found) != {"ed25519", "mldsa65"}:
        raise InputError(f"{source}: needs one Ed25519 and one ML-DSA-65 PUBLIC KEY block; found {sorted(found)}; "
                         "export them with `peft-studio keys export`")
    return PublicKeys(compute_key_id(found["ed25519"], found["mldsa65"]), found["ed25519"], found["mldsa65"])


def _folder_public_keys(folder: Path) -> PublicKeys:
    data = b"".join((folder / PUBLIC_FILES[n]).read_bytes() for n in ("ed25519", "mldsa65"))
    return public_keys_from_pem(data, str(folder))


def load_public_keys(path_or_home: str | Path | None = None) -> list[PublicKeys]:
    """Public keys from an exported PEM bundle file, one key folder, or every key of a studio home."""
    path = Path(path_or_home) if path_or_home is not None else studio_home()
    if path.is_file():
        return [public_keys_from_pem(path.read_bytes(), str(path))]
    if (path / PUBLIC_FILES["ed25519"]).is_file():
        return [_folder_public_keys(path)]
    if path.is_dir():
        return [_folder_public_keys(k.path) for k in list_keys(path)]
    raise InputError(f"{path}: no such public key file or studio home; pass --public-key FILE or --home DIR")


def export_public_keys(home: str | Path | None = None, key_id: str | None = None, out: Path | None = None) -> bytes:
    """Both public keys of a key as one PEM bundle (written to `out` when given); never private material."""
    info = find_key(home, key_id)
    data = b"".join((info.path / PUBLIC_FILES[n]).read_bytes() for n in ("ed25519", "mldsa65"))
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_bytes(data)
    return data
