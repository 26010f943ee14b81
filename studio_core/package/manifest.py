"""The package manifest: an in-toto Statement v1 over the payload folder, as OpenSSF model-signing writes it.

For a folder hashed with file serialization and sha256 (`model_signing.hashing.Config()
.use_file_serialization(hashing_algorithm="sha256").hash(folder)`), model-signing lists one resource per
file (name = POSIX path relative to the folder, sorted as paths) and names the folder as the single subject,
whose sha256 is taken over the concatenated raw digests of the resources in that order. We compute the same
statement with our own streaming hasher, so tools of that ecosystem can read our manifests.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath
from typing import Any

from studio_core.digest import sha256_file
from studio_core.errors import InputError

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
# model-signing ignores these by default and says so in the statement; we refuse them instead (see below).
GIT_PATHS = (".git", ".gitattributes", ".github", ".gitignore")
SERIALIZATION = {"method": "files", "hash_type": "sha256", "allow_symlinks": False, "ignore_paths": list(GIT_PATHS)}


def payload_files(payload_dir: Path) -> list[str]:
    """Relative POSIX paths of every file under `payload_dir`, sorted as model-signing sorts them.

    Refuses symlinks (they could point anywhere) and git paths (model-signing would skip them, leaving
    files on disk that no digest covers).
    """
    root = Path(payload_dir)
    if not root.is_dir() or root.is_symlink():
        raise InputError(f"{root} is not a folder; build the package first (`build_package(run_dir)`)")
    names = []
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            raise InputError(f"{rel} in {root} is a symlink; packages hold only regular files, copy its target")
        if rel.split("/")[0] in GIT_PATHS:
            raise InputError(f"{rel} in {root} is a git path that model-signing ignores; remove it")
        if path.is_file():
            names.append(rel)
        elif not path.is_dir():
            raise InputError(f"{rel} in {root} is neither a file nor a folder; remove it")
    return sorted(names, key=PurePosixPath)


def subject_digest(resources: list[dict[str, str]]) -> str:
    """sha256 over the raw bytes of the resource digests, in the listed order (model-signing's subject)."""
    h = hashlib.sha256()
    for resource in resources:
        h.update(bytes.fromhex(resource["digest"]))
    return h.hexdigest()


def build_statement(name: str, digests: dict[str, str]) -> dict[str, Any]:
    """The in-toto statement for a subject `name` and its `{relative path: sha256}` digests."""
    resources = [{"name": n, "algorithm": "sha256", "digest": digests[n]} for n in sorted(digests, key=PurePosixPath)]
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": subject_digest(resources)}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {"serialization": dict(SERIALIZATION), "resources": resources},
    }


def build_manifest(payload_dir: Path) -> dict[str, Any]:
    """The in-toto Statement v1 over every file of `payload_dir`, each hashed by streaming."""
    root = Path(payload_dir)
    digests = {name: sha256_file(root / name) for name in payload_files(root)}
    return build_statement(root.resolve().name, digests)


def manifest_bytes(statement: dict[str, Any]) -> bytes:
    """The exact bytes written to manifest.json and signed: sorted keys, 2-space indent, trailing newline."""
    return (json.dumps(statement, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def statement_digests(statement: dict[str, Any]) -> dict[str, str]:
    """`{name: sha256}` from a statement's resources; raises InputError on a malformed or unsafe entry."""
    try:
        resources = statement["predicate"]["resources"]
        digests = {r["name"]: r["digest"] for r in resources if r["algorithm"] == "sha256"}
    except (KeyError, TypeError) as e:
        raise InputError(f"manifest is not a model-signing in-toto statement (missing {e})") from e
    if len(digests) != len(resources):
        raise InputError("manifest lists a resource twice or with an algorithm other than sha256")
    for name in digests:
        parts = PurePosixPath(name).parts
        if name.startswith("/") or ".." in parts or not parts:
            raise InputError(f"manifest names an unsafe path {name!r} (absolute or outside the payload)")
    return digests
