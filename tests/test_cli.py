import csv
from pathlib import Path
import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from studio_core.cli import main
from studio_core.runs import RunStore

TINY = ["--model", "tiny-random:llama", "--set", "preflight.micro_run_steps=1"]
ALPACA = [{"instruction": f"Audit clause {i}", "input": f"Notice period is {i} days.",
           "output": "Verdict: COMPLIANT" if i >= 30 else "Verdict: NON-COMPLIANT"} for i in range(20, 60)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def schema_files(tmp_path):
    """The same 40 conversations in each of the four schemas (and the four file formats)."""
    alpaca = write_jsonl(tmp_path / "alpaca.jsonl", ALPACA)
    pc = tmp_path / "pc.csv"
    with open(pc, "w", newline="", encoding="utf-8-sig") as f:
        writer = csv.DictWriter(f, ["prompt", "completion"])
        writer.writeheader()
        writer.writerows({"prompt": r["instruction"] + "\n" + r["input"], "completion": r["output"]} for r in ALPACA)
    messages = tmp_path / "messages.json"
    messages.write_text(json.dumps([{"messages": [
        {"role": "system", "content": "You audit contracts."}, {"role": "user", "content": r["input"]},
        {"role": "assistant", "content": r["output"]}]} for r in ALPACA]), encoding="utf-8")
    sharegpt = tmp_path / "sharegpt.parquet"
    pq.write_table(pa.Table.from_pylist([{"conversations": [
        {"from": "human", "value": r["input"]}, {"from": "gpt", "value": r["output"]}]} for r in ALPACA]), sharegpt)
    return {"alpaca": alpaca, "prompt_completion": pc, "messages": messages, "sharegpt": sharegpt}


@pytest.mark.parametrize("schema", ["alpaca", "prompt_completion", "messages", "sharegpt"])
def test_simulate_each_schema_completes(tmp_path, capsys, schema):
    path = schema_files(tmp_path)[schema]
    code = main(["run", "--simulate", "--data", str(path), *TINY, "--home", str(tmp_path / "home")])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    run_dir = RunStore(tmp_path / "home").list()[0].path
    assert out[-1] == str(run_dir)
    report = json.loads((run_dir / "artifacts" / "data" / "report.json").read_text())
    assert report["sources"][0]["row_schema"] == schema
    assert report["rows"]["train"] + report["rows"]["val"] == 40
    for name in ("config.json", "status.json", "events.jsonl", "metrics.jsonl", "artifacts/preflight.json"):
        assert (run_dir / name).exists()
    assert json.loads((run_dir / "status.json").read_text())["state"] == "completed"


def bad_inputs(tmp_path):
    """(path, text the error must contain) for each bad input the data step must refuse."""
    d = tmp_path / "bad"
    d.mkdir()
    good = [json.dumps(r) for r in ALPACA[:8]]
    cases = {}

    def case(name, lines, expect, raw=None):
        path = d / name
        if raw is not None:
            path.write_bytes(raw)
        else:
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        cases[name] = (path, expect)

    case("bad_json.jsonl", good[:6] + ['{"instruction": "x", "output": '] + good[6:], ["bad_json.jsonl line 7"])
    case("missing.jsonl", good[:2] + ['{"instruction": "x"}'], ["missing.jsonl line 3", "output"])
    case("empty_field.jsonl", good[:3] + ['{"instruction": "x", "output": "  "}'], ["line 4", "output"])
    case("wrong_type.jsonl", good[:4] + ['{"instruction": "x", "output": 5}'], ["line 5", "output", "int"])
    case("role.jsonl", ['{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}',
                        '{"messages": [{"role": "tool", "content": "a"}, {"role": "assistant", "content": "b"}]}'],
         ["role.jsonl line 2", "tool"])
    case("empty.jsonl", [], ["empty.jsonl", "empty"], raw=b"")
    case("latin1.jsonl", [], ["latin1.jsonl", "line 2", "UTF-8"],
         raw=(good[0] + "\n" + '{"instruction": "caf\xe9", "output": "x"}\n').encode("latin-1"))
    cases["missing_file"] = (d / "nope.jsonl", ["nope.jsonl", "not found"])
    sub = d / "folder"
    sub.mkdir()
    (sub / "inside.jsonl").write_text(good[0] + "\n")
    cases["directory"] = (sub, ["folder", "directory", "inside.jsonl"])
    return cases


CASES = ["bad_json.jsonl", "missing.jsonl", "empty_field.jsonl", "wrong_type.jsonl", "role.jsonl", "empty.jsonl",
         "latin1.jsonl", "missing_file", "directory"]


@pytest.mark.parametrize("name", CASES)
def test_bad_input_exits_2_names_the_place_and_writes_only_the_run_dir(tmp_path, capsys, name):
    path, expected = bad_inputs(tmp_path)[name]
    home = tmp_path / "home"
    cache_before = sorted(os.listdir(os.environ["PEFT_STUDIO_MODEL_CACHE"]))
    code = main(["run", "--data", str(path), *TINY, "--home", str(home)])
    captured = capsys.readouterr()
    assert code == 2
    for text in expected:
        assert text in captured.err, (text, captured.err)
    assert captured.out == ""
    assert sorted(os.listdir(home)) == ["runs"]
    (run,) = RunStore(home).list()
    assert run.read_status()["state"] == "failed"
    assert sorted(os.listdir(run.artifacts)) == []
    assert sorted(os.listdir(os.environ["PEFT_STUDIO_MODEL_CACHE"])) == cache_before


def test_skip_policy_drops_bad_rows_and_reports_them(tmp_path, capsys):
    path, _ = bad_inputs(tmp_path)["bad_json.jsonl"]
    code = main(["run", "--simulate", "--data", str(path), *TINY, "--set", "data.on_bad_rows=skip",
                 "--home", str(tmp_path / "home")])
    assert code == 0
    run = RunStore(tmp_path / "home").list()[0]
    report = json.loads((run.artifacts / "data" / "report.json").read_text())
    assert report["sources"][0]["bad_rows"][0]["line"] == 7
    assert any("skipped 1 bad rows" in e["message"] for e in run.events())


def test_unknown_set_key_exits_2_with_nearest_key(tmp_path, capsys):
    code = main(["run", "--set", "training.max_stps=3", "--home", str(tmp_path)])
    assert code == 2
    assert "did you mean training.max_steps" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_bad_model_reference_exits_2(tmp_path, capsys):
    code = main(["run", "--model", str(tmp_path / "no-model"), "--set", "data.demo_rows=100", "--home", str(tmp_path)])
    assert code == 2
    assert "no-model" in capsys.readouterr().err


def test_schema_and_runs_commands(tmp_path, capsys):
    assert main(["schema"]) == 0
    assert "RunConfig" in json.loads(capsys.readouterr().out)["title"]
    main(["run", "--simulate", *TINY, "--set", "data.demo_rows=100", "--home", str(tmp_path)])
    capsys.readouterr()
    assert main(["runs", "--home", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "completed" in out and "sim" in out


def test_hardware_json(capsys):
    assert main(["hardware", "--json"]) == 0
    profile = json.loads(capsys.readouterr().out)
    assert profile["cpu_cores_logical"] >= 1 and "torch_version" in profile


def test_console_script_exit_codes_and_last_line(tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "peft-studio")
    ok = subprocess.run([exe, "run", "--simulate", *TINY, "--set", "data.demo_rows=100", "--home", str(tmp_path)],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    last = ok.stdout.strip().splitlines()[-1]
    assert os.path.isabs(last) and os.path.isfile(os.path.join(last, "status.json"))
    bad = subprocess.run([exe, "run", "--set", "nope=1", "--home", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 2 and "nope" in bad.stderr


@pytest.mark.embedded
def test_simulate_with_defaults_on_the_embedded_model(tmp_path, capsys, embedded_model_dir):
    assert main(["run", "--simulate", "--home", str(tmp_path)]) == 0
    run_dir = capsys.readouterr().out.strip().splitlines()[-1]
    run = RunStore(tmp_path).get(os.path.basename(run_dir))
    status = run.read_status()
    assert status["state"] == "completed" and status["simulated"] is True
    done = [name for name, s in status["stages"].items() if s["state"] == "completed"]
    assert done == ["data_resolve", "model_resolve", "preflight", "training_init", "training_exec", "evaluation"]
    model = json.loads((run.artifacts / "model" / "model.json").read_text())
    assert model["ref"] == "embedded:smollm2-135m-instruct" and model["weight_sha256"]["model.safetensors"]
    report = json.loads((run.artifacts / "data" / "report.json").read_text())
    assert report["rows"] == {"train": 2160, "val": 240} and report["simulation_slice"]["train"] == 64


def test_queue_commands_add_list_cancel_and_work_through_the_queue(tmp_path, capsys):
    from studio_core.runs import RunStore

    home = ["--home", str(tmp_path)]
    assert main(["run", "--queue", "--simulate", *TINY, "--set", "data.demo_rows=100", "--set", "name=later", *home]) == 0
    first = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["run", "--queue", "--simulate", *TINY, "--set", "data.demo_rows=100", *home]) == 0
    second = Path(capsys.readouterr().out.strip().splitlines()[-1])
    store = RunStore(tmp_path)
    assert store.get(first.name).read_status()["state"] == "queued"
    assert main(["queue", *home]) == 0
    listing = capsys.readouterr().out
    assert listing.index(first.name) < listing.index(second.name) and "cli" in listing
    assert main(["queue", "cancel", first.name, *home]) == 0
    assert f"{first.name}: cancelled" in capsys.readouterr().out
    assert main(["queue", "work", *home]) == 0
    assert "ran 1 run(s)" in capsys.readouterr().err
    assert store.get(first.name).read_status()["state"] == "cancelled"
    assert store.get(second.name).read_status()["state"] == "completed"
    assert main(["queue", "cancel", second.name, *home]) == 2  # nothing left to cancel: says so
    assert "completed: there is nothing to cancel" in capsys.readouterr().err


def test_a_plain_run_says_when_another_run_shares_the_machine(tmp_path, capsys):
    from studio_core.runs import RunStore

    RunStore(tmp_path).create("{}", "20261201-000000-other-0000", [], False)  # running, owned by this live process
    main(["run", "--simulate", *TINY, "--set", "data.demo_rows=100", "--home", str(tmp_path)])
    assert "run 20261201-000000-other-0000 is running on this machine too" in capsys.readouterr().err


def test_a_demo_config_file_run_on_your_data_leaves_the_demo_recipe_behind(tmp_path):
    from studio_core.cli import build_parser, resolve_run_config
    from studio_core.config import RunConfig
    from studio_core.config_io import save_config

    demo = RunConfig().model_copy(update={"training": RunConfig().training.model_copy(update={"max_steps": 70})})
    save_config(demo, tmp_path / "demo.json")
    mine = tmp_path / "mine.jsonl"
    for argv in (["run", str(tmp_path / "demo.json"), "--data", str(mine)],
                 ["run", str(tmp_path / "demo.json"), "--set", f"data.path={mine}"]):
        config = resolve_run_config(build_parser().parse_args(argv))
        assert config.data.path == str(mine)
        assert (config.training.label_words, config.training.label_group, config.evaluation.task_rows) == ([], "", 32)
        assert config.training.max_steps == 70  # what the file changed stays
    kept = resolve_run_config(build_parser().parse_args(["run", str(tmp_path / "demo.json")]))
    assert kept.training.label_words == ["COMPLIANT", "NON-COMPLIANT"]
    words = resolve_run_config(build_parser().parse_args(
        ["run", str(tmp_path / "demo.json"), "--data", str(mine), "--set", 'training.label_words=["yes", "no"]']))
    assert words.training.label_words == ["yes", "no"]  # an explicit --set still wins
