"""Runs as supervised child processes: the queue on disk, cancel across processes, kills, logs, resources."""

import json
import os
import signal
import time

import pytest

from studio_core import jobs
from studio_core.config import validate_config
from studio_core.errors import ConfigError
from studio_core.runs import RunStore

QUICK = {"model": {"ref": "tiny-random:llama"}, "data": {"demo_rows": 100, "max_length": 384},
         "preflight": {"enabled": False}, "evaluation": {"enabled": False},
         "training": {"max_steps": 4, "eval_steps": 2, "save_steps": 2, "per_device_batch_size": 2,
                      "gradient_accumulation_steps": 1, "eval_rows": 4, "precision": "fp32"}}
LONG = {**QUICK, "training": {**QUICK["training"], "max_steps": 400, "eval_steps": 2, "save_steps": 2}}


def supervisor(home, **options):
    return jobs.Supervisor(home, poll_s=0.1, sample_s=0.2, **{"cancel_grace_s": 30, "term_grace_s": 5, **options})


def wait_for(predicate, timeout=180, what="condition"):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def trained_steps(run) -> int:
    return max((m["step"] for m in run.metrics() if "loss" in m), default=0)


def test_queued_runs_survive_a_restart_and_run_in_order_each_in_its_own_process(tmp_path):
    first = jobs.enqueue(validate_config({**QUICK, "name": "first"}), tmp_path, requested_by="alice")
    second = jobs.enqueue(validate_config({**QUICK, "name": "second"}), tmp_path)
    assert [r.run_id for r in jobs.queued_runs(tmp_path)] == [first.run_id, second.run_id]
    assert first.read_status()["state"] == "queued" and jobs.queue_position(second.run_id, tmp_path) == 2
    # No studio was running: a new supervisor (a restarted studio) finds both on disk and runs them in order.
    assert supervisor(tmp_path).drain() == 2
    a, b = first.read_status(), second.read_status()
    assert a["state"] == b["state"] == "completed"
    assert a["finished_at"] <= b["started_at"]  # never both at once
    for run in (first, second):
        job = run.job_record()
        assert job["exit_code"] == 0 and job["signal"] is None and job["pid"] != os.getpid()
        assert "completed" in (run.path / jobs.LOG_FILE).read_text()  # the child's own output
        samples = [json.loads(line) for line in (run.path / jobs.RESOURCES_FILE).read_text().splitlines()]
        assert samples and all(s["rss_mb"] > 0 and s["cpu_percent"] >= 0 for s in samples)
        assert job["peaks"]["peak_rss_mb"] == max(s["rss_mb"] for s in samples) > 200  # torch and a model loaded
        assert run.read_status()["resources"]["peak_rss_mb"] > 200
    assert any(e["type"] == "queued" and e["requested_by"] == "alice" for e in first.events())


def test_cancel_while_queued_never_starts_the_run(tmp_path):
    run = jobs.enqueue(validate_config(QUICK), tmp_path)
    assert jobs.cancel(run.run_id, tmp_path, requested_by="bob") == "cancelled"
    status = run.read_status()
    assert status["state"] == "cancelled" and "queued" in status["error"]
    assert supervisor(tmp_path).drain() == 0 and not run.job_record()
    assert not (run.artifacts / "adapter").exists()


def test_cancel_while_training_reads_cancelled_then_resume_finishes(tmp_path):
    sup = supervisor(tmp_path).start()
    try:
        run = jobs.enqueue(validate_config(LONG), tmp_path)
        wait_for(lambda: trained_steps(run) >= 2, what="training steps")
        assert jobs.cancel(run.run_id, tmp_path, requested_by="session-1") == "cancelling"
        wait_for(lambda: run.job_record().get("ended_at"), what="the child to exit")
        status = run.read_status()
        assert status["state"] == "cancelled" and status["stages"]["training_exec"]["state"] == "cancelled"
        assert run.job_record()["exit_code"] == 0  # it stopped at a step boundary, not by a signal
        assert not (run.artifacts / "adapter").exists() and not (run.artifacts / "training.json").exists()
        assert (run.path / "checkpoints").is_dir()
        stopped_at = trained_steps(run)
        assert any(e["type"] == "cancel_requested" and e["requested_by"] == "session-1" for e in run.events())
        # Resume (a shorter run now, with the same checkpoint): it continues, and no step is replayed twice.
        config = run.config_data()
        config["training"]["max_steps"] = stopped_at + 2
        (run.path / "config.json").write_text(json.dumps(config))
        jobs.enqueue(validate_config(config), tmp_path, resume=run.run_id)
        wait_for(lambda: run.read_status()["state"] == "completed" and run.job_record().get("ended_at"),
                 what="the resumed run")
        steps = [m["step"] for m in run.metrics() if "loss" in m]
        assert steps == sorted(set(steps)) and steps[-1] == stopped_at + 2
        assert (run.artifacts / "adapter" / "adapter_model.safetensors").is_file()
    finally:
        sup.stop()


def test_cancel_in_data_resolve_escalates_to_sigterm_and_reads_cancelled(tmp_path):
    big = tmp_path / "big.jsonl"  # slow enough to validate that the cancel lands inside the stage
    row = json.dumps({"instruction": "Say hi " * 20, "output": "hi " * 20})
    big.write_text("".join(row[:-1] + f', "input": "{i}"}}\n' for i in range(300_000)))
    sup = supervisor(tmp_path, cancel_grace_s=0.5).start()
    try:
        run = jobs.enqueue(validate_config({**QUICK, "data": {"path": str(big)}}), tmp_path)
        wait_for(lambda: run.read_status()["stages"]["data_resolve"].get("state") == "running", what="data resolve")
        jobs.cancel(run.run_id, tmp_path)
        wait_for(lambda: run.job_record().get("ended_at"), what="the child to exit")
        status = run.read_status()
        assert status["state"] == "cancelled", status
        assert status["stages"]["data_resolve"]["state"] == "cancelled"
        assert not (run.artifacts / "data" / "train.tokens.jsonl").exists()
        assert any(e["type"] == "cancel_escalated" and "SIGTERM" in e["message"] for e in run.events())
    finally:
        sup.stop()


def test_sigkilled_job_reads_interrupted_with_the_signal_and_resumes_from_its_checkpoint(tmp_path):
    sup = supervisor(tmp_path).start()
    try:
        run = jobs.enqueue(validate_config(LONG), tmp_path)
        wait_for(lambda: (run.path / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file()
                 and trained_steps(run) >= 3, what="a checkpoint")
        os.kill(run.job_record()["pid"], signal.SIGKILL)
        wait_for(lambda: run.job_record().get("ended_at"), what="the supervisor to see the kill")
        status = run.read_status()
        assert status["state"] == "interrupted" and "SIGKILL" in status["error"]
        assert run.job_record()["signal"] == "SIGKILL"
        assert "Traceback" not in (run.path / jobs.LOG_FILE).read_text()
        config = run.config_data()
        config["training"]["max_steps"] = 6
        (run.path / "config.json").write_text(json.dumps(config))
        jobs.enqueue(validate_config(config), tmp_path, resume=run.run_id)
        wait_for(lambda: run.read_status()["state"] == "completed" and run.job_record().get("ended_at"),
                 what="the resumed run")
        assert any(e["type"] == "resumed" for e in run.events())
        assert trained_steps(run) == 6
    finally:
        sup.stop()


def test_a_failing_job_shows_its_stage_message_and_log(tmp_path):
    run = jobs.enqueue(validate_config({**QUICK, "data": {"path": str(tmp_path / "missing.jsonl")}}), tmp_path)
    supervisor(tmp_path).drain()
    status = run.read_status()
    assert status["state"] == "failed" and "Data Resolve" in status["error"] and "missing.jsonl" in status["error"]
    assert status["stages"]["data_resolve"]["state"] == "failed"
    assert run.job_record()["exit_code"] == 2  # bad input, as the CLI's exit codes say
    assert "missing.jsonl" in (run.path / jobs.LOG_FILE).read_text()


def test_secrets_reach_the_child_through_a_pipe_and_are_written_nowhere(tmp_path):
    from studio_core.package import generate_keys

    passphrase = "correct-horse-4711"
    generate_keys(tmp_path, passphrase)
    config = validate_config({**QUICK, "package": {"enabled": True}, "signing": {
        "enabled": True, "passphrase_env": "PEFT_TEST_SIGNING_PASSPHRASE"}})
    assert "PEFT_TEST_SIGNING_PASSPHRASE" not in os.environ
    runner = jobs.JobRunner(poll_s=0.1, sample_s=0.5)
    try:
        job = runner.submit(config, tmp_path, secrets={"PEFT_TEST_SIGNING_PASSPHRASE": passphrase})
        assert runner.wait(job.run_id, tmp_path, timeout=300) == "completed"
    finally:
        runner.stop()
    assert any(e["type"] == "signed" for e in job.run.events())
    for root, _, files in os.walk(tmp_path):
        for name in files:
            assert passphrase.encode() not in open(os.path.join(root, name), "rb").read(), name


def test_a_run_queued_with_a_secret_fails_clearly_after_a_restart_lost_it(tmp_path):
    run = jobs.enqueue(validate_config(QUICK), tmp_path, needs_secrets=["SIGNING_PASSPHRASE"])
    supervisor(tmp_path).drain()  # a new studio process: the secret lived only in the old one's memory
    status = run.read_status()
    assert status["state"] == "failed" and "SIGNING_PASSPHRASE" in status["error"] and "resume" in status["error"]


def test_unrunnable_config_is_refused_at_submit(tmp_path, step7_unavailable):
    with pytest.raises(ConfigError, match="not available yet"):
        jobs.enqueue(validate_config({"comm": {"enabled": True}}), tmp_path)
    assert RunStore(tmp_path).list() == []


def test_a_restarted_studio_adopts_the_run_its_predecessor_started_and_waits_for_it(tmp_path):
    """The run's process outlives a killed supervisor (its own session); the next one supervises it to its end."""
    import subprocess
    import sys

    run = jobs.enqueue(validate_config({**LONG, "training": {**LONG["training"], "max_steps": 30}}), tmp_path)
    second = jobs.enqueue(validate_config({**QUICK, "name": "next"}), tmp_path)
    first_studio = subprocess.Popen([sys.executable, "-m", "studio_core.cli", "queue", "work", "--home",
                                     str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: trained_steps(run) >= 1, what="training under the first supervisor")
    finally:
        first_studio.kill()  # the studio dies; its run's process does not
        first_studio.wait()
    child = run.job_record()["pid"]
    assert run.read_status()["state"] == "running" and os.kill(child, 0) is None  # still alive
    sup = supervisor(tmp_path)
    assert sup.step()  # adopts the running run: waits for it, does not start the queued one beside it
    assert run.read_status()["state"] == "completed" and second.read_status()["state"] == "queued"
    job = run.job_record()
    assert job["ended_at"] and job["exit_status_unknown"] and job["supervisor_pid"] == os.getpid()
    assert sup.step() and second.read_status()["state"] == "completed"  # then the queue goes on
