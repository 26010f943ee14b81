import json
import threading

import pytest

from studio_core import workflow
from studio_core.config import validate_config
from studio_core.errors import CancelledError, ConfigError, InputError
from studio_core.runs import RunStore

FAST = {"model": {"ref": "tiny-random:llama"}, "preflight": {"enabled": False}, "data": {"demo_rows": 120},
        "method": {"enabled": False}, "training": {"enabled": False}, "evaluation": {"enabled": False}}


def test_twelve_stages_in_wizard_order():
    titles = [s.title for s in workflow.STAGES]
    assert titles == ["Data Resolve", "Model Resolve", "Pre-flight Check", "Training Init", "Pruning Aware Init",
                      "Training Exec", "Dynamic Sparsification", "Evaluation", "Export ONNX", "Compile",
                      "TGSP Packing", "Evidence Signing"]
    assert [s.number for s in workflow.STAGES] == list(range(1, 13))


def test_enabling_an_unavailable_stage_is_refused_before_any_write(tmp_path, step7_unavailable):
    config = validate_config({"comm": {"enabled": True}})
    with pytest.raises(ConfigError) as e:
        workflow.run(config, tmp_path)
    assert "comm.enabled" in str(e.value) and "not available yet" in str(e.value)
    assert not (tmp_path / "runs").exists()


def test_run_records_stage_states_timings_and_events(tmp_path):
    run = workflow.run(validate_config(FAST), tmp_path)
    status = run.read_status()
    assert status["state"] == "completed"
    stages = status["stages"]
    assert stages["data_resolve"]["state"] == "completed" and stages["data_resolve"]["seconds"] >= 0
    assert stages["preflight"] == {"state": "skipped", "reason": "preflight.enabled=false"}
    assert stages["pruning_init"] == {"state": "skipped", "reason": "pruning.enabled=false"}
    assert stages["evidence_signing"]["reason"] == "signing.enabled=false"
    kinds = [e["type"] for e in run.events()]
    assert kinds[0] == "run_started" and kinds[-1] == "run_completed"
    assert json.loads((run.path / "config.json").read_text())["model"]["ref"] == "tiny-random:llama"


def test_data_artifacts_digest_is_deterministic(tmp_path):
    a = workflow.run(validate_config(FAST), tmp_path)
    b = workflow.run(validate_config(FAST), tmp_path)
    report_a = json.loads((a.artifacts / "data" / "report.json").read_text())
    report_b = json.loads((b.artifacts / "data" / "report.json").read_text())
    assert report_a["sha256"] == report_b["sha256"]
    assert report_a["rows"] == {"train": 108, "val": 12}
    train = (a.artifacts / "data" / "train.jsonl").read_text().splitlines()
    assert len(train) == 108 and json.loads(train[0])["messages"][-1]["role"] == "assistant"


def test_stage_failure_is_recorded_and_run_stops(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{oops\n')
    with pytest.raises(workflow.StageFailed) as e:
        workflow.run(validate_config({**FAST, "data": {"path": str(bad)}}), tmp_path / "home")
    assert e.value.is_input_error and "line 2" in str(e.value)
    status = e.value.run.read_status()
    assert status["state"] == "failed" and "line 2" in status["error"]
    assert status["stages"]["data_resolve"]["state"] == "failed"
    assert status["stages"]["model_resolve"]["state"] == "pending"


def test_cancel_before_a_stage_leaves_a_cancelled_resumable_run(tmp_path):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CancelledError):
        workflow.run(validate_config(FAST), tmp_path, cancel=cancel)
    (run,) = RunStore(tmp_path).list()
    assert run.read_status()["state"] == "cancelled"
    resumed = workflow.run(validate_config(FAST), tmp_path, resume=run.run_id)
    assert resumed.path == run.path and resumed.read_status()["state"] == "completed"


def test_completed_run_cannot_be_resumed(tmp_path):
    run = workflow.run(validate_config(FAST), tmp_path)
    with pytest.raises(InputError, match="already completed"):
        workflow.run(validate_config(FAST), tmp_path, resume=run.run_id)


def test_simulation_is_marked_everywhere(tmp_path):
    run = workflow.run(validate_config({**FAST, "simulate": True}), tmp_path)
    assert "-sim-" in run.run_id
    assert run.read_status()["simulated"] is True
    assert run.events()[0]["simulated"] is True
    report = json.loads((run.artifacts / "data" / "report.json").read_text())
    assert report["simulation_slice"] == {"train": 64, "val": 12}
    assert "tiny random model" in json.loads((run.artifacts / "model" / "model.json").read_text())["simulation"]
