"""Pre-flight Check through workflow.run: a go report with real numbers, and each no-go naming its field."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from studio_core import workflow
from studio_core.config import RunConfig, validate_config
from studio_core.runs import RunDir

LLAMA_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TOPICS = ["liability caps", "termination notice", "payment terms", "confidentiality", "governing law",
          "auto-renewal", "breach notification", "non-compete clauses"]


@pytest.fixture
def alpaca_file(tmp_path: Path) -> Path:
    """40 distinct alpaca rows, short enough that the byte-level tiny tokenizer keeps them under 256 tokens."""
    path = tmp_path / "train.jsonl"
    rows = [
        {"instruction": f"Summarise rule {i} on {TOPICS[i % len(TOPICS)]}.", "input": f"Clause {i}.",
         "output": f"Rule {i}: check {TOPICS[i % len(TOPICS)]}."}
        for i in range(40)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _config(data_path: str, **overrides: dict[str, Any]) -> RunConfig:
    sections: dict[str, dict[str, Any]] = {
        "data": {"path": data_path, "max_length": 256},
        "model": {"ref": "tiny-random:llama"},
        "preflight": {"micro_run_steps": 2},
        "training": {"per_device_batch_size": 2, "enabled": False},
        "method": {"enabled": False},
        "evaluation": {"enabled": False},
    }
    for section, values in overrides.items():
        if isinstance(values, dict):
            sections.setdefault(section, {}).update(values)
    data: dict[str, Any] = {"name": "preflight-test", **sections}
    data.update({k: v for k, v in overrides.items() if not isinstance(v, dict)})
    return validate_config(data)


def _read(run: RunDir, name: str) -> dict[str, Any]:
    return json.loads((run.path / name).read_text(encoding="utf-8"))


def _no_go(config: RunConfig) -> tuple[workflow.StageFailed, dict[str, Any]]:
    """Run a config expected to stop at pre-flight; returns the error and preflight.json, checking the status."""
    with pytest.raises(workflow.StageFailed) as excinfo:
        workflow.run(config)
    failed = excinfo.value
    assert failed.stage.name == "preflight"
    assert not failed.is_input_error
    status = _read(failed.run, "status.json")
    assert status["state"] == "failed"
    assert status["stages"]["data_resolve"]["state"] == "completed"
    assert status["stages"]["model_resolve"]["state"] == "completed"
    assert status["stages"]["preflight"]["state"] == "failed"
    assert status["stages"]["preflight"]["error"].startswith("PreflightError: no-go")
    assert status["error"] == str(failed)
    report = _read(failed.run, "artifacts/preflight.json")
    assert report["go"] is False and report["errors"]
    for error in report["errors"]:
        assert error in str(failed)  # every blocking reason is in the raised message
    return failed, report


def test_go_report_has_parameters_memory_and_a_measured_time(alpaca_file: Path, studio_env: Path) -> None:
    events: list[dict[str, Any]] = []
    config = _config(str(alpaca_file))
    run = workflow.run(config, on_event=events.append)

    assert run.path.parent == studio_env / "runs"
    status = _read(run, "status.json")
    assert status["state"] == "completed"
    assert [status["stages"][s]["state"] for s in ("data_resolve", "model_resolve", "preflight")] == ["completed"] * 3
    assert status["stages"]["training_init"] == {"state": "skipped", "reason": "method.enabled=false"}

    report = _read(run, "artifacts/preflight.json")
    assert report["go"] is True and report["errors"] == []
    assert report["simulated"] is False
    assert report["target_modules"] == LLAMA_PROJECTIONS
    params = report["parameters"]
    assert 0 < params["trainable"] < params["total"]
    assert 0 < params["trainable_percent"] < 100
    assert math.isclose(params["trainable_percent"], 100 * params["trainable"] / params["total"], abs_tol=1e-3)
    memory = report["memory_gib"]
    assert memory["total"] > 0 and memory["device"] == "cpu"
    assert memory["total"] <= memory["budget"] <= memory["available"]
    timing = report["time_estimate"]
    assert timing["seconds_per_batch"] > 0 and timing["tokens_per_batch"] > 0
    assert timing["measured_on"] == "base model" and timing["micro_run_steps"] == 2
    assert len(timing["micro_run_losses"]) == 2
    # Training's time: its optimizer steps, the periodic validations (on start, every eval_steps, after the last
    # step) and the checkpoints.
    assert timing["validations"] == 1 + math.ceil(config.training.max_steps / config.training.eval_steps)
    # A checkpoint every save_steps and one after the last step, each timed by writing one in pre-flight.
    assert timing["checkpoints"] == math.ceil(config.training.max_steps / config.training.save_steps)
    assert timing["steps_s"] > 0 and timing["validation_s"] > 0 and timing["checkpoint_s"] > 0  # kept to 1 ms
    assert timing["estimated_training_s"] == pytest.approx(
        timing["steps_s"] + timing["validation_s"] + timing["checkpoint_s"], abs=0.16)
    assert all(math.isfinite(x) and x > 0 for x in timing["micro_run_losses"])
    assert report["tokens"]["no_supervised_tokens"] == 0 and report["tokens"]["max_length"] == 256
    assert report["rank"]["train_rows"] == 36  # 40 rows, 10% held out

    go_events = [e for e in events if e["type"] == "preflight_go"]
    assert len(go_events) == 1 and go_events[0]["message"].startswith("go: ")
    assert [e["type"] for e in run.events()][-1] == "run_completed"


def test_missing_target_module_is_a_no_go_listing_the_real_modules(alpaca_file: Path) -> None:
    failed, report = _no_go(_config(str(alpaca_file), method={"target_modules": ["nope_proj"]}))
    message = str(failed)
    assert "method.target_modules: nope_proj not found" in message
    for real in ("q_proj", "down_proj", "embed_tokens"):
        assert real in message
    assert report["target_modules"] == ["nope_proj"]
    assert "parameters" not in report and "time_estimate" not in report  # nothing ran past the blocker


def test_fp16_on_cpu_is_a_no_go_naming_training_precision(alpaca_file: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("fp16 is supported on a CUDA GPU")
    failed, report = _no_go(_config(str(alpaca_file), training={"precision": "fp16"}))
    assert "training.precision=fp16" in str(failed)
    assert report["precision"]["resolved"] == "fp16" and report["precision"]["fp16_supported"] is False


def test_max_length_that_truncates_every_answer_is_a_no_go(alpaca_file: Path) -> None:
    failed, report = _no_go(_config(str(alpaca_file), data={"max_length": 16}))
    assert "data.max_length=16" in str(failed) and "raise data.max_length" in str(failed)
    assert report["tokens"]["truncated"] == 36 and report["tokens"]["no_supervised_tokens"] == 36  # every row


def test_memory_over_budget_is_a_no_go_naming_memory(alpaca_file: Path) -> None:
    failed, report = _no_go(_config(str(alpaca_file), preflight={"memory_headroom": 1e-9}))
    message = str(failed)
    assert "estimated training memory" in message and "budget" in message
    assert "training.per_device_batch_size" in message  # says what to lower
    assert report["memory_gib"]["total"] > report["memory_gib"]["budget"]
    assert "time_estimate" not in report  # no micro-run after a no-go


def test_simulation_uses_a_64_row_slice_and_the_simulation_model() -> None:
    run = workflow.run(_config("demo:legal-audit", simulate=True, data={"demo_rows": 200}))
    assert run.run_id.split("-")[-2] == "sim"
    assert _read(run, "status.json")["simulated"] is True

    data_report = _read(run, "artifacts/data/report.json")
    assert data_report["simulation_slice"] == {"train": 64, "val": 16}
    assert data_report["rows"] == {"train": 180, "val": 20}  # the full split is still reported
    assert sum(1 for _ in (run.artifacts / "data" / "train.jsonl").open()) == 64

    report = _read(run, "artifacts/preflight.json")
    assert report["go"] is True and report["simulated"] is True
    assert report["time_estimate"]["measured_on"] == "simulation model"
    assert report["rank"]["train_rows"] == 180  # judged against the full data, not the slice
    assert "simulation" in _read(run, "artifacts/model/model.json")


def test_micro_run_measures_on_examples_that_keep_assistant_tokens(model_cache: Path) -> None:
    """Regression: the first train examples all truncated away their answers, and the micro-run's loss was NaN."""
    from studio_core.data.tokenize import tokenize_conversation
    from studio_core.models.resolve import load_tokenizer, resolve_model

    run = workflow.run(_config("demo:legal-audit", simulate=True, data={"demo_rows": 200}))
    tokenizer = load_tokenizer(resolve_model("tiny-random:llama", model_cache))
    with (run.artifacts / "data" / "train.jsonl").open() as f:
        first = [json.loads(next(f))["messages"] for _ in range(2)]
    assert all(tokenize_conversation(tokenizer, m, 256).supervised_tokens == 0 for m in first)  # the precondition

    report = _read(run, "artifacts/preflight.json")
    assert report["go"] is True
    assert 0 < report["tokens"]["no_supervised_tokens"] < 64
    assert any("lose all assistant tokens" in w for w in report["warnings"])  # a warning, not a blocker
    assert all(math.isfinite(x) for x in report["time_estimate"]["micro_run_losses"])


def test_disk_estimate_is_close_to_what_the_run_writes(alpaca_file: Path) -> None:
    config = _config(str(alpaca_file), training={"enabled": True, "max_steps": 4, "eval_steps": 2, "save_steps": 2,
                                                 "precision": "fp32", "eval_rows": 4},
                     method={"enabled": True})
    run = workflow.run(config)
    disk = _read(run, "artifacts/preflight.json")["disk"]
    assert disk["free_bytes"] > disk["estimated_bytes"] > 0
    written = sum(p.stat().st_size for name in ("checkpoints", "artifacts/adapter", "artifacts/merged")
                  for p in (run.path / name).rglob("*") if p.is_file())
    # The estimate counts the weights (fp32) and optimizer state; the run also writes configs and a tokenizer.
    assert 0.5 < disk["estimated_bytes"] / written < 2.0, (disk, written)


def test_the_estimate_counts_the_validations_and_checkpoints_the_trainer_runs(alpaca_file: Path) -> None:
    """5 steps, evaluating and saving every 2: the Trainer validates on start, at 2 and 4 and after the last step,
    and saves at 2, 4 and 5. The estimate must count the same, the step after the last multiple included."""
    config = _config(str(alpaca_file), training={"enabled": True, "max_steps": 5, "eval_steps": 2, "save_steps": 2,
                                                 "precision": "fp32", "eval_rows": 4, "early_stopping_patience": 0},
                     method={"enabled": True})
    run = workflow.run(config)
    timing = _read(run, "artifacts/preflight.json")["time_estimate"]
    lines = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    validated_at = [line["step"] for line in lines if "val_loss" in line]
    assert validated_at == [0, 2, 4, 5] and timing["validations"] == len(validated_at)
    assert timing["checkpoints"] == 3 and (run.path / "checkpoints" / "checkpoint-5").is_dir()


def test_no_go_when_the_run_would_fill_the_disk(alpaca_file: Path, monkeypatch) -> None:
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    _, report = _no_go(_config(str(alpaca_file), training={"enabled": True}, method={"enabled": True}))
    assert any("only 0.00 GiB is free" in e and "PEFT_STUDIO_HOME" in e for e in report["errors"])


def test_a_batch_costs_its_rows_times_its_longest_row_on_average() -> None:
    from studio_core.preflight import expected_padded_tokens

    assert expected_padded_tokens([50] * 10, 4) == 200  # no padding
    mixed = expected_padded_tokens([10] * 9 + [100], 4)  # one long row in ten pads every batch it lands in
    assert 4 * 100 * (1 - 0.9 ** 4) + 40 * 0.9 ** 4 == pytest.approx(mixed, rel=0.1)
    assert expected_padded_tokens([], 4) == 0.0
