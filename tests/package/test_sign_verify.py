import base64
import json
import random
import shutil

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from studio_core.package import generate_keys, load_private_keys, load_public_keys, sign_package, verify_package
from studio_core.package.sign import pae

WEIGHTS = "payload/adapter/adapter_model.safetensors"


def envelope(package):
    return json.loads((package / "signature.dsse.json").read_text())


def write_envelope(package, data):
    (package / "signature.dsse.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def test_sign_then_verify(package, home):
    report = verify_package(package, load_public_keys(home))
    assert report.ok, report.reasons
    assert {a: r.ok for a, r in report.signatures.items()} == {"ed25519": True, "ml-dsa-65": True}
    assert report.manifest_matches_envelope and not (report.missing or report.extra or report.changed)
    env = envelope(package)
    assert env["payloadType"] == "application/vnd.in-toto+json"
    assert base64.b64decode(env["payload"]) == (package / "manifest.json").read_bytes()
    assert [s["algorithm"] for s in env["signatures"]] == ["ed25519", "ml-dsa-65"]


def test_pae_follows_the_dsse_spec():
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world")


def test_one_byte_flipped_in_a_weight_file(package, home):
    path = package / WEIGHTS
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    report = verify_package(package, load_public_keys(home))
    assert not report.ok and report.changed == [WEIGHTS]
    assert report.reasons == [f"changed file (sha256 differs from the manifest): {WEIGHTS}"]


def test_file_removed_and_file_added(package, home):
    (package / WEIGHTS).unlink()
    (package / "payload" / "adapter" / "extra.bin").write_bytes(b"x")
    report = verify_package(package, load_public_keys(home))
    assert not report.ok and report.missing == [WEIGHTS] and report.extra == ["payload/adapter/extra.bin"]
    assert any("missing file" in r for r in report.reasons) and any("extra file" in r for r in report.reasons)


def test_manifest_edited(package, home):
    manifest = json.loads((package / "manifest.json").read_text())
    manifest["predicate"]["resources"][0]["digest"] = "0" * 64
    (package / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    report = verify_package(package, load_public_keys(home))
    assert not report.ok and not report.manifest_matches_envelope
    assert any("manifest.json differs from the signed manifest" in r for r in report.reasons)


def test_envelope_payload_edited(package, home):
    env = envelope(package)
    statement = json.loads(base64.b64decode(env["payload"]))
    statement["predicate"]["resources"].pop()
    env["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    write_envelope(package, env)
    report = verify_package(package, load_public_keys(home))
    assert not report.ok
    assert "ed25519 signature failed: does not verify with key" in " ".join(report.reasons)
    assert "ml-dsa-65 signature failed: does not verify" in " ".join(report.reasons)


def test_one_signature_replaced_by_another_keys(package, home, tmp_path):
    other = load_private_keys(tmp_path / "other", generate_keys(tmp_path / "other").key_id)
    forged = tmp_path / "forged"
    shutil.copytree(package, forged)
    sign_package(forged, other)
    env = envelope(package)
    env["signatures"][1] = envelope(forged)["signatures"][1]  # ML-DSA from the other key
    write_envelope(package, env)
    report = verify_package(package, load_public_keys(home))
    assert not report.ok and report.signatures["ed25519"].ok and not report.signatures["ml-dsa-65"].ok
    assert "not among the trusted public keys" in report.signatures["ml-dsa-65"].detail
    both = load_public_keys(home) + load_public_keys(tmp_path / "other")
    report = verify_package(package, both)  # even when both keys are trusted, a mixed pair is refused
    assert not report.ok and any("different keys" in r for r in report.reasons)


def test_signature_bytes_replaced_under_the_same_keyid(package, home, tmp_path):
    other = load_private_keys(tmp_path / "other", generate_keys(tmp_path / "other").key_id)
    env = envelope(package)
    env["signatures"][0]["sig"] = base64.b64encode(other.ed25519.sign(b"x")).decode()
    write_envelope(package, env)
    report = verify_package(package, load_public_keys(home))
    assert not report.ok and report.reasons == [(f"ed25519 signature failed: does not verify with key "
                                                f"{report.signatures['ed25519'].keyid[:16]}")]


def test_wrong_public_key(package, tmp_path):
    generate_keys(tmp_path / "stranger")
    report = verify_package(package, load_public_keys(tmp_path / "stranger"))
    assert not report.ok and not report.signatures["ed25519"].ok and not report.signatures["ml-dsa-65"].ok
    assert all("not among the trusted public keys" in r.detail for r in report.signatures.values())


def test_unsigned_package(package, home):
    (package / "signature.dsse.json").unlink()
    report = verify_package(package, load_public_keys(home))
    assert not report.ok and report.reasons == [("signature.dsse.json is missing: the package is not signed "
                                                "(sign it first)")]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), flips=st.integers(1, 4))
def test_random_byte_mutations_never_verify(package, home, tmp_path_factory, seed, flips):
    rng = random.Random(seed)
    target = tmp_path_factory.mktemp("fuzz") / "package"
    shutil.copytree(package, target)
    files = sorted(p for p in target.rglob("*") if p.is_file())
    path = rng.choice(files)
    data = bytearray(path.read_bytes())
    for _ in range(flips):
        if data:
            data[rng.randrange(len(data))] ^= rng.randrange(1, 256)
        else:
            data.append(rng.randrange(256))
    path.write_bytes(bytes(data))
    if bytes(data) == (package / path.relative_to(target)).read_bytes():  # flips cancelled out
        return
    report = verify_package(target, load_public_keys(home))
    assert not report.ok, f"{path.relative_to(target)} mutated yet verified"
