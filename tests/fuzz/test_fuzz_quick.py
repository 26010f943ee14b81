"""A quick pass of the fuzz targets (tests/fuzz/fuzz_targets.py; the full run is 10,000 inputs each), and the
crashes the full run found, kept as regressions."""

from __future__ import annotations

import io
import json

import pytest

from studio_core.data.load import load_conversations
from studio_core.errors import DataError
from tests.fuzz import fuzz_targets


@pytest.mark.parametrize("target", list(fuzz_targets.TARGETS))
def test_a_quick_fuzz_pass_finds_only_clean_errors_and_correct_verdicts(target):
    row = fuzz_targets.TARGETS[target](120)
    assert row["inputs"] >= 100 and row["unexpected"] == 0, row["samples"]


def _damaged_parquet(tmp_path, offset: int):
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pa.table({"prompt": ["a question"] * 3, "completion": ["an answer"] * 3}), sink)
    data = bytearray(sink.getvalue())
    data[offset:offset + 8] = b"\xff" * 8  # inside the first data page header: the footer still opens
    path = tmp_path / "damaged.parquet"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("offset", [4, 8, 12])
def test_a_parquet_file_damaged_past_its_footer_is_a_clean_data_error(tmp_path, offset):
    with pytest.raises(DataError, match="damaged.parquet: damaged Parquet data after row 0"):
        load_conversations(_damaged_parquet(tmp_path, offset), file_format="parquet")


def test_a_signature_whose_key_id_is_not_a_string_is_refused_not_a_crash(tmp_path):
    from studio_core.package.sign import envelope_text
    from studio_core.package.verify import verify_package

    package, _, trusted = fuzz_targets._signed_package(tmp_path)
    envelope = json.loads((package / "signature.dsse.json").read_text())
    envelope["signatures"][0]["keyid"] = ["not", "a", "string"]
    (package / "signature.dsse.json").write_text(envelope_text(envelope))
    report = verify_package(package, trusted)
    assert not report.ok and any("not in the form the studio writes" in r for r in report.reasons)


def test_a_text_row_counts_as_loaded_and_an_unknown_role_as_malformed(tmp_path):
    """The full run once flagged 4 Parquet inputs whose only column was `text`: continued pre-training rows, one
    {"role": "text"} message each, which the fuzzer's own check did not know. It knows them now, and still flags
    a message whose role no schema gives."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pa.table({"text": ["plain text to continue"] * 2}), sink)
    tally = fuzz_targets.Tally("parquet")
    fuzz_targets._load(tally, tmp_path, "text.parquet", sink.getvalue(), "parquet", "fail")
    assert dict(tally.outcomes) == {"loaded": 1}
    tally = fuzz_targets.Tally("jsonl")
    fuzz_targets._load(tally, tmp_path, "roles.jsonl", json.dumps({"messages": [
        {"role": "user", "content": "q"}, {"role": "text", "content": "a"}]}).encode(), "jsonl", "fail")
    assert "loaded" not in tally.outcomes  # a text message inside a chat is refused, or flagged
