import pytest

from studio_core.errors import InputError
from studio_core.uploads import sanitise_filename, save_upload


@pytest.mark.parametrize("name,expected", [
    ("../../etc/passwd.jsonl", "passwd.jsonl"), ("..\\\\..\\\\x.csv", "x.csv"), (".hidden.json", "hidden.json"),
    ("my data (v2).jsonl", "my_data_v2_.jsonl"), ("", "upload"),
])
def test_names_are_sanitised(name, expected):
    assert sanitise_filename(name) == expected


def test_upload_lands_inside_the_home_uploads_folder(tmp_path):
    path = save_upload(tmp_path, "../../escape.jsonl", b'{"prompt": "a", "completion": "b"}\n')
    assert path == tmp_path / "uploads" / "escape.jsonl" and path.read_bytes().startswith(b'{"prompt"')


def test_oversize_and_unknown_kinds_are_refused_with_the_fix(tmp_path):
    with pytest.raises(InputError, match="upload limit"):
        save_upload(tmp_path, "big.jsonl", b"x" * 2048, max_bytes=1024)
    with pytest.raises(InputError, match="not a data file"):
        save_upload(tmp_path, "model.bin", b"x")
    assert not (tmp_path / "uploads").exists()


def test_a_same_name_upload_gets_a_new_name_and_the_first_is_kept(tmp_path):
    first = save_upload(tmp_path, "train.jsonl", b"first\n")
    second = save_upload(tmp_path, "train.jsonl", b"second\n")
    third = save_upload(tmp_path, "train.jsonl", b"third\n")
    assert (first.name, second.name, third.name) == ("train.jsonl", "train-2.jsonl", "train-3.jsonl")
    assert first.read_bytes() == b"first\n" and second.read_bytes() == b"second\n"
