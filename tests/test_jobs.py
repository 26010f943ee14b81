import time

import pytest

from studio_core.config import validate_config
from studio_core.errors import ConfigError
from studio_core.jobs import JobRegistry
from studio_core.runs import RunStore

QUICK = {"model": {"ref": "tiny-random:llama"}, "data": {"demo_rows": 100, "max_length": 384},
         "preflight": {"enabled": False}, "evaluation": {"enabled": False},
         "training": {"max_steps": 4, "eval_steps": 2, "save_steps": 2, "per_device_batch_size": 2,
                      "gradient_accumulation_steps": 1, "eval_rows": 4, "precision": "fp32"}}


def test_one_job_at_a_time_the_second_waits_its_turn(tmp_path):
    jobs = JobRegistry()
    first = jobs.submit(validate_config({**QUICK, "name": "first"}), tmp_path)
    second = jobs.submit(validate_config({**QUICK, "name": "second"}), tmp_path)
    assert jobs.queue_position(second.run_id) in (1, None) and second.state in ("queued", "running")
    while first.state == "queued":
        time.sleep(0.01)
    assert jobs.queue_position(second.run_id) == 1 and second.state == "queued"
    assert jobs.wait(first.run_id, 120).state == "completed"
    assert jobs.wait(second.run_id, 120).state == "completed"
    store = RunStore(tmp_path)
    first_status, second_status = (store.get(r).read_status() for r in (first.run_id, second.run_id))
    assert first_status["finished_at"] <= second_status["started_at"]  # never both at once


def test_cancel_a_running_job_then_resume_it(tmp_path):
    jobs = JobRegistry()
    job = jobs.submit(validate_config({**QUICK, "training": {**QUICK["training"], "max_steps": 40,
                                                              "eval_steps": 20, "save_steps": 20}}), tmp_path)
    run_dir = tmp_path / "runs" / job.run_id
    deadline = time.time() + 120
    while not (run_dir / "metrics.jsonl").is_file() or "loss" not in (run_dir / "metrics.jsonl").read_text():
        assert time.time() < deadline
        time.sleep(0.05)
    jobs.cancel(job.run_id)
    assert jobs.wait(job.run_id, 120).state == "cancelled"
    assert RunStore(tmp_path).get(job.run_id).read_status()["state"] == "cancelled"
    resumed = jobs.submit(validate_config(RunStore(tmp_path).get(job.run_id).config_data()), tmp_path,
                          resume=job.run_id)
    assert resumed.run_id == job.run_id and jobs.wait(job.run_id, 300).state == "completed"


def test_cancel_a_queued_job_drops_it(tmp_path):
    jobs = JobRegistry()
    jobs.submit(validate_config(QUICK), tmp_path)
    queued = jobs.submit(validate_config({**QUICK, "name": "later"}), tmp_path)
    jobs.cancel(queued.run_id)
    assert queued.state == "cancelled" and jobs.queue_position(queued.run_id) is None
    assert not (tmp_path / "runs" / queued.run_id).exists()


def test_unrunnable_config_is_refused_at_submit(tmp_path):
    with pytest.raises(ConfigError, match="not available yet"):
        JobRegistry().submit(validate_config({"pruning": {"enabled": True}}), tmp_path)
