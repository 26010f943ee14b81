"""TGSP packing, hybrid (Ed25519 + ML-DSA-65) signing, verification and the promotion policy gate.

Entry points: `build_package(run_dir)`, `generate_keys(home)`, `load_private_keys(home)`,
`sign_package(package_dir, keys)`, `verify_package(package_dir, load_public_keys(home))`,
`promote(package_dir, policy_path, channel, home)`.
"""

from studio_core.package.build import build_package, export_archive
from studio_core.package.keys import (
    KeyInfo,
    PrivateKeys,
    PublicKeys,
    export_public_keys,
    generate_keys,
    list_keys,
    load_private_keys,
    load_public_keys,
)
from studio_core.package.manifest import build_manifest
from studio_core.package.policy import Policy, PolicyRefused, PolicyResult, evaluate_policy, load_policy, promote
from studio_core.package.sign import sign_package
from studio_core.package.verify import VerifyReport, verify_package

__all__ = [
    "KeyInfo", "Policy", "PolicyRefused", "PolicyResult", "PrivateKeys", "PublicKeys", "VerifyReport",
    "build_manifest", "build_package", "evaluate_policy", "export_archive", "export_public_keys", "generate_keys",
    "list_keys", "load_policy", "load_private_keys", "load_public_keys", "promote", "sign_package", "verify_package",
]
