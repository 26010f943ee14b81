"""Hypothesis fuzz targets: the data loaders (JSONL, JSON, CSV, Parquet) and the package verifier.

A run counts every input tried and every outcome that is neither a clean input error (DataError) nor a correct
verdict; it never stops at the first one, so the figures are complete. `python tests/fuzz/fuzz_targets.py
--examples 10000` is the full run (minutes, not part of `make test`); tests/fuzz/test_fuzz_quick.py runs the same
targets with a few hundred inputs each.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from studio_core.data.load import load_conversations  # noqa: E402
from studio_core.data.schemas import ROLES as CHAT_ROLES  # noqa: E402
from studio_core.errors import DataError  # noqa: E402

FIELDS = ["instruction", "input", "output", "prompt", "completion", "messages", "conversations", "role", "content",
          "from", "value", "system", "text", ""]
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)
messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "tool", "x", 3]),
                                            "content": json_scalars}), max_size=4)
words = st.text(min_size=1, max_size=20)
cells = words | words | json_scalars  # mostly the strings a valid row holds, sometimes anything
records = st.one_of(
    json_values,
    st.fixed_dictionaries({"instruction": cells, "output": cells}, optional={"input": cells}),
    st.fixed_dictionaries({"prompt": cells, "completion": cells}),
    st.fixed_dictionaries({"messages": messages}),
    st.fixed_dictionaries({"messages": st.lists(st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant"]), "content": cells}), min_size=1, max_size=4)}),
    st.fixed_dictionaries({"conversations": st.lists(st.fixed_dictionaries(
        {"from": st.sampled_from(["human", "gpt", "system", "bot"]), "value": cells}), max_size=4)}),
)
valid_records = st.lists(st.one_of(
    st.fixed_dictionaries({"prompt": words, "completion": words}),
    st.fixed_dictionaries({"instruction": words, "output": words}, optional={"input": words}),
), min_size=1, max_size=6)
ROLES = set(CHAT_ROLES)  # a chat row's roles; a `text` row (continued pre-training) is one {"role": "text"} message


class Tally:
    """Inputs tried and outcomes, per target; unexpected ones kept with a sample input and traceback."""

    def __init__(self, name: str):
        self.name, self.tried, self.outcomes, self.unexpected = name, 0, Counter(), []

    def unexpected_outcome(self, kind: str, sample: object, detail: str) -> None:
        self.outcomes[kind] += 1
        if len(self.unexpected) < 5:
            self.unexpected.append({"kind": kind, "input": repr(sample)[:400], "detail": detail[-1500:]})

    def row(self) -> dict:
        bad = sum(n for k, n in self.outcomes.items() if k.startswith("UNEXPECTED"))
        return {"target": self.name, "inputs": self.tried, "unexpected": bad, "outcomes": dict(self.outcomes),
                "samples": self.unexpected}


def _fuzz_settings(examples: int):
    return settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
                    suppress_health_check=list(HealthCheck))


def _load(tally: Tally, folder: Path, name: str, data: bytes, file_format: str, on_bad_rows: str) -> None:
    tally.tried += 1
    path = folder / name
    path.write_bytes(data)
    try:
        loaded = load_conversations(path, file_format=file_format, on_bad_rows=on_bad_rows)
    except DataError:
        tally.outcomes["input error"] += 1
        return
    except Exception as e:  # noqa: BLE001 - this is what the fuzzer looks for
        tally.unexpected_outcome(f"UNEXPECTED {type(e).__name__}", data[:300], traceback.format_exc())
        return
    def message(m, roles) -> bool:
        return isinstance(m, dict) and m.get("role") in roles and isinstance(m.get("content"), str)

    well_formed = loaded.rows and len(loaded.rows) == len(loaded.locations) and all(
        isinstance(row, list) and row and (all(message(m, ROLES) for m in row)
                                           or (len(row) == 1 and message(row[0], {"text"})))
        for row in loaded.rows)
    if not well_formed:
        tally.unexpected_outcome("UNEXPECTED malformed rows accepted", data[:300], repr(loaded.rows[:3]))
        return
    tally.outcomes["loaded" + (" (bad rows skipped)" if loaded.bad_rows else "")] += 1


def _lines(values: list, garbage: list[str]) -> bytes:
    lines = [json.dumps(v, allow_nan=True) for v in values] + garbage
    return "\n".join(lines).encode("utf-8")


def fuzz_text_format(file_format: str, examples: int) -> dict:
    tally = Tally(file_format)
    folder = Path(tempfile.mkdtemp(prefix=f"fuzz-{file_format}-"))
    suffix = {"jsonl": ".jsonl", "json": ".json", "csv": ".csv"}[file_format]

    def structured(draw_values, garbage):
        if file_format == "jsonl":
            return _lines(draw_values, garbage)
        if file_format == "json":
            return json.dumps(draw_values, allow_nan=True, indent=garbage[0] if garbage and garbage[0].isdigit()
                              else None).encode() + "".join(garbage[:1]).encode()
        import csv
        out = io.StringIO()
        writer = csv.writer(out)
        for value in draw_values:
            writer.writerow(value.keys() if isinstance(value, dict) else [value] if not isinstance(value, list)
                            else value)
        return (out.getvalue() + "\n".join(garbage)).encode("utf-8")

    @_fuzz_settings(examples)
    @given(kind=st.sampled_from(["structured", "structured", "bytes", "mutated"]),
           values=st.lists(records, max_size=6) | valid_records,
           garbage=st.lists(st.text(max_size=30), max_size=3), raw=st.binary(max_size=300),
           flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
           on_bad_rows=st.sampled_from(["fail", "skip"]))
    def target(kind, values, garbage, raw, flips, on_bad_rows):
        data = raw if kind == "bytes" else structured(values, garbage)
        if kind == "mutated" and data:
            buf = bytearray(data)
            for position, byte in flips:
                buf[position % len(buf)] = byte
            data = bytes(buf)
        _load(tally, folder, f"data{suffix}", data, file_format, on_bad_rows)

    target()
    shutil.rmtree(folder, ignore_errors=True)
    return tally.row()


def fuzz_parquet(examples: int) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tally = Tally("parquet")
    folder = Path(tempfile.mkdtemp(prefix="fuzz-parquet-"))
    columns = st.dictionaries(st.sampled_from(FIELDS[:-1]) | st.text(min_size=1, max_size=6),
                              st.sampled_from(["str", "int", "float", "bool", "list", "struct", "null", "binary"]),
                              min_size=1, max_size=4)
    cell = {"str": st.text(max_size=12) | st.none(), "int": st.integers(-2**63, 2**63 - 1) | st.none(),
            "float": st.floats() | st.none(), "bool": st.booleans() | st.none(),
            "list": st.lists(st.text(max_size=5), max_size=3) | st.none(), "null": st.none(),
            "struct": st.fixed_dictionaries({"role": st.text(max_size=5), "content": st.text(max_size=5)}) | st.none(),
            "binary": st.binary(max_size=8) | st.none()}

    @st.composite
    def tables(draw):
        spec = draw(columns | st.just({"prompt": "str", "completion": "str"}))
        rows = draw(st.integers(0, 5))
        return {name: draw(st.lists(cell[kind], min_size=rows, max_size=rows)) for name, kind in spec.items()}

    @_fuzz_settings(examples)
    @given(table=tables(), kind=st.sampled_from(["table", "truncated", "flipped", "bytes"]),
           cut=st.integers(0, 4000), flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                                                    min_size=1, max_size=4), raw=st.binary(max_size=300),
           on_bad_rows=st.sampled_from(["fail", "skip"]))
    def target(table, kind, cut, flips, raw, on_bad_rows):
        if kind == "bytes":
            data = raw
        else:
            try:
                sink = io.BytesIO()
                pq.write_table(pa.table(table), sink)
                data = sink.getvalue()
            except (pa.ArrowException, ValueError, TypeError, OverflowError):
                return  # a table pyarrow itself cannot build is not an input to the loader
            if kind == "truncated":
                data = data[:cut % max(1, len(data))]
            elif kind == "flipped":
                buf = bytearray(data)
                for position, byte in flips:
                    buf[position % len(buf)] = byte
                data = bytes(buf)
        _load(tally, folder, "data.parquet", data, "parquet", on_bad_rows)

    target()
    shutil.rmtree(folder, ignore_errors=True)
    return tally.row()


def _signed_package(folder: Path):
    """A small, real signed package (payload, manifest, DSSE envelope) and the key that signed it."""
    from studio_core.package import generate_keys, load_private_keys, load_public_keys
    from studio_core.package.manifest import build_manifest, manifest_bytes
    from studio_core.package.sign import sign_package

    payload = folder / "package" / "payload"
    (payload / "adapter").mkdir(parents=True)
    (payload / "adapter" / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 8}\n')
    (payload / "adapter" / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 4)
    (payload / "evidence.json").write_text('{"schema": "peft-studio/evidence/v1"}\n')
    (folder / "package" / "manifest.json").write_bytes(manifest_bytes(build_manifest(payload)))
    info = generate_keys(folder / "home")
    keys = load_private_keys(folder / "home", info.key_id)
    sign_package(folder / "package", keys)
    return folder / "package", keys, load_public_keys(folder / "home")


def _snapshot(package: Path) -> dict[str, bytes]:
    return {p.relative_to(package).as_posix(): p.read_bytes() for p in sorted(package.rglob("*")) if p.is_file()}


def _json_edit(document, path: list, value):
    """`document` with the value at `path` (indices wrap; missing keys are added) replaced by `value`."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(document, dict):
        keys = sorted(document)
        key = keys[head % len(keys)] if isinstance(head, int) and keys else str(head)
        return {**document, key: _json_edit(document.get(key), rest, value)}
    if isinstance(document, list) and document:
        index = head % len(document) if isinstance(head, int) else 0
        return document[:index] + [_json_edit(document[index], rest, value)] + document[index + 1:]
    return value


def _independently_valid(package: Path, original: dict[str, bytes]) -> bool:
    """What a correct verifier must conclude, computed without its code: the files are exactly the signed ones."""
    return _snapshot(package) == original


def fuzz_verifier(examples: int) -> dict:
    from studio_core.package.manifest import manifest_bytes
    from studio_core.package.sign import envelope_text, sign_package
    from studio_core.package.verify import verify_package

    tally = Tally("package verifier")
    folder = Path(tempfile.mkdtemp(prefix="fuzz-verify-"))
    pristine, keys, trusted = _signed_package(folder)
    original = _snapshot(pristine)
    names = sorted(original)
    path_steps = st.lists(st.integers(0, 50) | st.sampled_from(["name", "digest", "sig", "keyid", "algorithm",
                                                                 "resources", "subject", "_type", "payload"]),
                          max_size=5)

    @_fuzz_settings(examples)
    @given(kind=st.sampled_from(["bytes", "json", "json+resign", "delete", "add", "envelope-json"]),
           target_name=st.sampled_from(names), flips=st.lists(st.tuples(st.integers(0, 100_000), st.integers(0, 255)),
                                                               min_size=1, max_size=3),
           steps=path_steps, value=json_values, extra=st.sampled_from(["payload/new.bin", "stray.txt",
                                                                       "payload/adapter/x.json"]))
    def target(kind, target_name, flips, steps, value, extra):
        tally.tried += 1
        work = folder / "work"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(pristine, work)
        sample = (kind, target_name, flips, steps, value)
        resigned = False
        if kind == "bytes":
            buf = bytearray((work / target_name).read_bytes())
            for position, byte in flips:
                if buf:
                    buf[position % len(buf)] = byte
            (work / target_name).write_bytes(bytes(buf))
        elif kind == "delete":
            (work / target_name).unlink()
        elif kind == "add":
            (work / extra).write_bytes(b"added")
        elif kind == "envelope-json":  # canonical spelling, so the verifier looks past the form check
            envelope = json.loads((work / "signature.dsse.json").read_text())
            (work / "signature.dsse.json").write_text(envelope_text(_json_edit(envelope, steps, value)))
        else:  # the manifest edited as JSON; re-signed with the trusted key, so only its content can refuse it
            statement = json.loads((work / "manifest.json").read_text())
            try:
                (work / "manifest.json").write_bytes(manifest_bytes(_json_edit(statement, steps, value)))
            except (ValueError, TypeError):
                return
            if kind == "json+resign":
                sign_package(work, keys)
                resigned = True
        try:
            report = verify_package(work, trusted)
        except Exception as e:  # noqa: BLE001 - this is what the fuzzer looks for
            tally.unexpected_outcome(f"UNEXPECTED {type(e).__name__}", sample, traceback.format_exc())
            return
        if resigned:  # a correct verdict: ok only if the signed statement still names exactly the files on disk
            correct = not report.ok or _statement_names_files(work)
        else:
            correct = report.ok == _independently_valid(work, original)
        if not correct:
            tally.unexpected_outcome(f"UNEXPECTED wrong verdict ok={report.ok}", sample, "; ".join(report.reasons))
            return
        tally.outcomes[f"{'verified' if report.ok else 'refused'} ({kind})"] += 1

    target()
    shutil.rmtree(folder, ignore_errors=True)
    return tally.row()


def _statement_names_files(package: Path) -> bool:
    import hashlib

    statement = json.loads((package / "manifest.json").read_text())
    resources = statement["predicate"]["resources"]
    listed = {r["name"]: r["digest"] for r in resources}
    on_disk = {p.relative_to(package / "payload").as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in (package / "payload").rglob("*") if p.is_file()}
    return listed == on_disk and len(resources) == len(listed)


TARGETS = {"jsonl": lambda n: fuzz_text_format("jsonl", n), "json": lambda n: fuzz_text_format("json", n),
           "csv": lambda n: fuzz_text_format("csv", n), "parquet": fuzz_parquet, "verifier": fuzz_verifier}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10_000, help="Inputs per target (default 10,000).")
    parser.add_argument("--targets", nargs="*", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--json", help="Also write the results to this file.")
    args = parser.parse_args(argv)
    rows = []
    for name in args.targets:
        start = time.perf_counter()
        row = TARGETS[name](args.examples)
        row["seconds"] = round(time.perf_counter() - start, 1)
        rows.append(row)
        print(f"{row['target']:>16}: {row['inputs']:>6} inputs, {row['unexpected']} unexpected, "
              f"{row['seconds']:>6} s  {row['outcomes']}", flush=True)
        for sample in row["samples"]:
            print(json.dumps(sample, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 1 if any(r["unexpected"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
