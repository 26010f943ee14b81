import json
import os
import signal
import subprocess
import sys
import textwrap

from studio_core.runs import RunDir, RunStore, atomic_write_text, read_jsonl, studio_home


def test_home_from_env_and_argument(tmp_path, monkeypatch):
    monkeypatch.setenv("PEFT_STUDIO_HOME", str(tmp_path / "env-home"))
    assert studio_home() == tmp_path / "env-home"
    assert studio_home(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("PEFT_STUDIO_HOME")
    assert studio_home().name == ".peft-studio"


def test_create_lays_out_the_run_dir(tmp_path):
    run = RunStore(tmp_path).create('{"name": "x"}\n', "r1", ["a", "b"], simulated=True)
    for name in ("config.json", "status.json", "events.jsonl", "metrics.jsonl", "artifacts"):
        assert (run.path / name).exists()
    status = run.read_status()
    assert status["state"] == "running" and status["simulated"] is True
    assert status["stages"] == {"a": {"state": "pending"}, "b": {"state": "pending"}}


def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write_text(tmp_path / "f.json", "1")
    atomic_write_text(tmp_path / "f.json", "2")
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]
    assert (tmp_path / "f.json").read_text() == "2"


def test_torn_jsonl_line_is_skipped(tmp_path):
    (tmp_path / "e.jsonl").write_text('{"a": 1}\n{"b": ')
    assert read_jsonl(tmp_path / "e.jsonl") == [{"a": 1}]


def test_dead_running_run_reads_as_interrupted(tmp_path):
    run = RunStore(tmp_path).create("{}", "r1", [], simulated=False)
    status = json.loads(run.status_file.read_text())
    status["owner"]["pid"] = 2**22 + 7  # no such process
    run.status_file.write_text(json.dumps(status))
    assert run.read_status()["state"] == "interrupted"


def test_missing_status_reads_as_interrupted(tmp_path):
    (tmp_path / "runs" / "r2").mkdir(parents=True)
    assert RunDir(tmp_path / "runs" / "r2").read_status()["state"] == "interrupted"


def test_staging_dirs_are_not_listed(tmp_path):
    (tmp_path / "runs" / ".creating-x").mkdir(parents=True)
    RunStore(tmp_path).create("{}", "r1", [], simulated=False)
    assert [r.run_id for r in RunStore(tmp_path).list()] == ["r1"]


def test_killed_process_leaves_an_interrupted_run(tmp_path):
    """SIGKILL a real run mid-stage: the run dir must read as interrupted, never completed."""
    script = textwrap.dedent(f"""
        import time
        from studio_core import workflow, stages
        from studio_core.config import validate_config
        def slow(ctx):
            print("in-stage", flush=True)
            time.sleep(60)
        workflow.STAGES[0] = workflow.Stage(1, "data_resolve", "Data Resolve", "data", slow)
        workflow.run(validate_config({{"preflight": {{"enabled": False}}}}), {str(tmp_path)!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "in-stage"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    (run,) = RunStore(tmp_path).list()
    status = run.read_status()
    assert status["state"] == "interrupted"
    assert status["stages"]["data_resolve"]["state"] == "running"


def test_a_run_dir_written_by_the_previous_version_lists_opens_and_resumes(tmp_path, capsys):
    """config.json from commit 5550a46 (no schema_version), no stored tokens: still listed, opened, resumed."""
    from pathlib import Path

    from studio_core import workflow
    from studio_core.cli import main
    from studio_core.config import validate_config
    from studio_core.runs import CONFIG_SCHEMA_VERSION, config_file_text

    old = json.loads((Path(__file__).parent / "fixtures" / "config_v1_5550a46.json").read_text())
    assert "schema_version" not in old
    old["model"]["ref"] = "tiny-random:llama"
    old["data"].update(demo_rows=100, max_length=384)
    old["preflight"]["enabled"] = old["evaluation"]["enabled"] = False
    old["training"].update(max_steps=2, eval_steps=2, save_steps=2, per_device_batch_size=2,
                           gradient_accumulation_steps=1, eval_rows=4, precision="fp32")
    run = RunStore(tmp_path).create(json.dumps(old), "20261130-120000-old-abcd", ["data_resolve"], False)
    status = run.read_status()
    status.update(state="interrupted", owner={"pid": 1, "pid_started": 0.0, "host": "elsewhere-no"})
    status["stages"]["data_resolve"] = {"state": "completed"}  # before tokens were stored: data resolve re-runs
    run.write_status(status)
    assert main(["runs", "--home", str(tmp_path)]) == 0
    assert "20261130-120000-old-abcd" in capsys.readouterr().out
    config = validate_config(run.config_data())
    assert config.model.ref == "tiny-random:llama"
    resumed = workflow.run(config, tmp_path, resume=run.run_id)
    assert resumed.read_status()["state"] == "completed"
    assert (run.artifacts / "data" / "train.tokens.jsonl").is_file()
    assert json.loads(config_file_text(config.model_dump_json()))["schema_version"] == CONFIG_SCHEMA_VERSION


def test_a_config_from_a_newer_version_is_refused_by_name(tmp_path):
    import pytest

    from studio_core.errors import InputError

    run = RunStore(tmp_path).create(json.dumps({"schema_version": 99, "name": "x"}), "r-new", [], False)
    with pytest.raises(InputError, match="schema_version 99"):
        run.config_data()


def test_a_config_from_before_the_demo_recipe_keeps_what_it_meant():
    """A schema-2 config.json (written before 2026-12-04) that leaves a field out meant the plain default then and
    the verdict-first demo rows: resuming it must not switch to the recipe or to reason-first rows mid-run."""
    from studio_core.config import RunConfig, validate_config
    from studio_core.runs import migrate_config

    old = RunConfig().model_dump(mode="json")
    del old["data"]["demo_answer"], old["training"]["label_group"], old["evaluation"]["task_rows"]
    old["training"].update(max_steps=40, per_device_batch_size=4, label_words=[])
    config = validate_config(migrate_config({"schema_version": 2, **old}))
    assert (config.data.demo_answer, config.training.label_group, config.evaluation.task_rows) == (
        "verdict_first", "", 32)
    new = validate_config(migrate_config({"schema_version": 3, "training": {"max_steps": 60}}))
    assert (new.data.demo_answer, new.training.label_group, new.training.max_steps) == (
        "reason_first", "Policy rule: (.*)", 60)
