import os

import pytest
from google.protobuf import json_format
from model_signing import hashing
from model_signing._signing.signing import Payload

from studio_core.errors import InputError
from studio_core.package.manifest import SERIALIZATION, build_manifest


def model_signing_statement(folder):
    manifest = hashing.Config().use_file_serialization(hashing_algorithm="sha256").hash(folder)
    return json_format.MessageToDict(Payload(manifest).statement.pb)


def assert_same_statement(ours, theirs):
    assert ours["_type"] == theirs["_type"] and ours["predicateType"] == theirs["predicateType"]
    assert ours["subject"] == theirs["subject"]
    assert ours["predicate"]["resources"] == theirs["predicate"]["resources"]
    serialization = dict(theirs["predicate"]["serialization"])
    serialization["ignore_paths"] = sorted(serialization["ignore_paths"])  # a frozenset in model-signing
    assert {**SERIALIZATION, "ignore_paths": sorted(SERIALIZATION["ignore_paths"])} == serialization


def test_manifest_of_a_package_payload_is_model_signings_statement(package):
    payload = package / "payload"
    ours = build_manifest(payload)
    assert_same_statement(ours, model_signing_statement(payload))
    names = [r["name"] for r in ours["predicate"]["resources"]]
    assert "adapter/adapter_model.safetensors" in names and "evidence.json" in names


def test_path_order_matches_model_signing_where_string_order_differs(tmp_path):
    # "a-c" < "a/b" as strings ('-' < '/'), but model-signing sorts paths by their parts
    (tmp_path / "m" / "a").mkdir(parents=True)
    for name, data in {"a/b": b"1", "a-c": b"2", "a.d": b"", "Z": b"z" * 3_000_000}.items():
        (tmp_path / "m" / name).write_bytes(data)
    ours = build_manifest(tmp_path / "m")
    assert [r["name"] for r in ours["predicate"]["resources"]] == ["Z", "a/b", "a-c", "a.d"]
    assert_same_statement(ours, model_signing_statement(tmp_path / "m"))


def test_symlinks_and_git_paths_are_refused(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "outside").write_text("secret")
    os.symlink(tmp_path / "outside", tmp_path / "m" / "link")
    with pytest.raises(InputError, match="link .*symlink"):
        build_manifest(tmp_path / "m")
    (tmp_path / "m" / "link").unlink()
    (tmp_path / "m" / ".gitignore").write_text("*")
    with pytest.raises(InputError, match="git path"):
        build_manifest(tmp_path / "m")
