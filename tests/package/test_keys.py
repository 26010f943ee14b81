import stat

import pytest

from studio_core.errors import InputError
from studio_core.package import export_public_keys, generate_keys, list_keys, load_private_keys, load_public_keys
from studio_core.package.keys import compute_key_id


def test_private_keys_are_0600_and_key_id_is_the_public_keys_digest(home):
    info = generate_keys(home)
    for name in ("ed25519.key.pem", "mldsa65.key.pem"):
        assert stat.S_IMODE((info.path / name).stat().st_mode) == 0o600
    keys = load_private_keys(home)
    assert keys.key_id == info.key_id == compute_key_id(keys.ed25519.public_key(), keys.mldsa65.public_key())
    assert [k.key_id for k in list_keys(home)] == [info.key_id]


def test_repr_never_shows_private_material(home):
    keys = load_private_keys(home, generate_keys(home).key_id)
    assert repr(keys) == f"PrivateKeys(key_id='{keys.key_id}')"


def test_encrypted_key_needs_its_passphrase(home):
    info = generate_keys(home, passphrase="s3cret-pass")
    assert b"ENCRYPTED PRIVATE KEY" in (info.path / "mldsa65.key.pem").read_bytes()
    with pytest.raises(InputError, match="encrypted: give its passphrase"):
        load_private_keys(home, info.key_id)
    with pytest.raises(InputError, match="wrong passphrase") as e:
        load_private_keys(home, info.key_id, "wrong")
    assert "s3cret" not in str(e.value)
    assert load_private_keys(home, info.key_id, "s3cret-pass").key_id == info.key_id


def test_exported_public_keys_round_trip_without_private_material(home, tmp_path):
    info = generate_keys(home)
    data = export_public_keys(home, info.key_id[:10], tmp_path / "pub.pem")
    assert data.count(b"BEGIN PUBLIC KEY") == 2 and b"PRIVATE" not in data
    (loaded,) = load_public_keys(tmp_path / "pub.pem")
    assert loaded.key_id == info.key_id
    assert [k.key_id for k in load_public_keys(home)] == [info.key_id]


def test_missing_or_ambiguous_key_says_how_to_fix(home):
    with pytest.raises(InputError, match="keys generate"):
        load_private_keys(home)
    generate_keys(home)
    generate_keys(home)
    with pytest.raises(InputError, match="2 keys .*signing.key_id"):
        load_private_keys(home)


def test_a_private_key_others_can_read_is_refused_naming_the_chmod_fix(home):
    info = generate_keys(home)
    path = info.path / "ed25519.key.pem"
    path.chmod(0o644)
    with pytest.raises(InputError, match=r"mode 644.*chmod 600 .*ed25519\.key\.pem"):
        load_private_keys(home)
    path.chmod(0o600)
    assert load_private_keys(home).key_id == info.key_id


def test_a_shared_studio_signs_only_with_an_encrypted_key(home, monkeypatch):
    plain = generate_keys(home)
    encrypted = generate_keys(home, passphrase="s3cret-pass")
    monkeypatch.setenv("PEFT_STUDIO_SHARED", "1")
    with pytest.raises(InputError, match="peft-studio keys generate --passphrase-env VAR"):
        load_private_keys(home, plain.key_id)
    assert load_private_keys(home, encrypted.key_id, "s3cret-pass").key_id == encrypted.key_id
    monkeypatch.delenv("PEFT_STUDIO_SHARED")
    assert load_private_keys(home, plain.key_id).key_id == plain.key_id  # the local CLI is not restricted
