"""Trackers (tracking.backends) on a real run, read back with each tool's own reader: MLflow's MlflowClient on the
sqlite store, TensorBoard's EventAccumulator on the event files, and the W&B offline run's transaction log.

wandb 0.31 ships no Python reader of offline runs (its old `wandb.sdk.internal.datastore` is gone), so
`wandb_history` reads the `.wandb` file's LevelDB-log framing here and parses each record with wandb's own
protobuf `Record` class (`wandb.proto.wandb_internal_pb2`).
"""

from __future__ import annotations

import json
import struct
import threading
from pathlib import Path

import pytest

from studio_core import workflow
from studio_core.catalog import Backend
from studio_core.config import validate_config
from studio_core.connectors import trackers
from studio_core.connectors.mlflow_tracker import RUN_TAG
from tests.train.test_training import tiny_config

SECRET = "wandb-test-key-0123456789abcdef0123456789abcdef"


def tracked_config(tracking: dict, **sections):
    data = tiny_config(max_steps=4, eval_steps=2, save_steps=2).model_dump(mode="json")
    data.update(tracking=tracking, **sections)
    return validate_config(data)


def by_key(lines: list[dict], key: str) -> list[tuple[int, float]]:
    return [(m["step"], float(m[key])) for m in lines if key in m]


def wandb_history(run_file: Path) -> list[dict]:
    """The history rows of an offline W&B run, from its LevelDB-log framed `.wandb` file."""
    from wandb.proto import wandb_internal_pb2

    data, block, header = run_file.read_bytes(), 32768, 7
    assert data[:4] == b":W&B"
    pos, records, partial = 7, [], b""
    while pos + header <= len(data):
        if block - pos % block < header:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + header])
        payload, pos = data[pos + header:pos + header + length], pos + header + length
        if kind == 1:
            records.append(payload)
        elif kind in (2, 3):
            partial = (b"" if kind == 2 else partial) + payload
        elif kind == 4:
            records.append(partial + payload)
    rows = []
    for raw in records:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return rows


def test_mlflow_tensorboard_and_wandb_hold_what_the_run_dir_holds(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("WANDB_API_KEY", SECRET)  # present, yet offline mode must neither use nor store it
    real_parts = trackers.trainer_parts

    def with_epsilon(ctx):  # a feature's extra metric field (as DP adds epsilon) reaches the trackers too
        parts = real_parts(ctx)
        parts.metric_fields.append(lambda state: {"epsilon": 0.25 * state.global_step})
        return parts

    monkeypatch.setattr(trackers, "trainer_parts", with_epsilon)
    home = tmp_path / "home"
    run = workflow.run(tracked_config({"backends": ["mlflow", "tensorboard", "wandb"]}, package={"enabled": True}),
                       home)
    lines = run.metrics()
    assert run.read_status()["state"] == "completed"
    assert not [e for e in run.events() if e.get("about") == "tracking"], "no tracker warned"

    client = MlflowClient(tracking_uri=f"sqlite:///{home.resolve() / 'mlflow.db'}")
    [found] = client.search_runs([client.get_experiment_by_name("peft-studio").experiment_id],
                                 filter_string=f"tags.`{RUN_TAG}` = '{run.run_id}'")
    assert found.info.status == "FINISHED" and found.info.run_name == run.run_id
    assert found.data.params["training.max_steps"] == "4" and found.data.params["model.ref"] == "tiny-random:llama"
    assert by_key(lines, "epsilon") == [(1, 0.25), (2, 0.5), (3, 0.75), (4, 1.0)]
    for key in ("loss", "val_loss", "lr", "tokens_per_s", "grad_norm", "epoch", "epsilon"):
        history = client.get_metric_history(found.info.run_id, key)
        assert sorted((m.step, m.value) for m in history) == sorted(by_key(lines, key)), key
    assert by_key(lines, "loss") and by_key(lines, "val_loss")
    artifacts = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"adapter", "evaluation", "package"} <= artifacts
    assert {a.path for a in client.list_artifacts(found.info.run_id, "adapter")} >= {
        "adapter/adapter_model.safetensors", "adapter/adapter_config.json"}
    assert "evaluation/metrics.json" in {a.path for a in client.list_artifacts(found.info.run_id, "evaluation")}

    events = EventAccumulator(str(run.path / "tensorboard"), size_guidance={"scalars": 0, "histograms": 0})
    events.Reload()
    assert [(s.step, pytest.approx(s.value)) for s in events.Scalars("loss")] == by_key(lines, "loss")
    assert [(s.step, pytest.approx(s.value)) for s in events.Scalars("val_loss")] == by_key(lines, "val_loss")
    histograms = events.Tags()["histograms"]
    for layer in (0, 1):  # tiny-random llama: 2 layers, LoRA on q_proj and v_proj by default
        tag = next(t for t in histograms if f"layers.{layer}.self_attn.q_proj.lora_B" in t)
        steps = [h.step for h in events.Histograms(tag)]
        assert steps == [m["step"] for m in lines if "val_loss" in m]
    lora_b = next(t for t in histograms if "lora_B" in t)
    first, last = events.Histograms(lora_b)[0], events.Histograms(lora_b)[-1]
    assert first.histogram_value.max == first.histogram_value.min == 0.0  # LoRA's B starts at zero...
    assert last.histogram_value.max > last.histogram_value.min  # ...and training moved it

    [run_file] = (run.path / "wandb").glob("offline-run-*/*.wandb")
    rows = wandb_history(run_file)
    for key in ("loss", "val_loss", "lr", "tokens_per_s", "epsilon"):
        assert [(r["_step"], pytest.approx(r[key])) for r in rows if key in r] == by_key(lines, key), key
    every_file = [p for p in run.path.rglob("*") if p.is_file()]
    assert not [p for p in every_file if SECRET.encode() in p.read_bytes()], "the W&B key was written to the run dir"


class StuckTracker:
    """A tracker whose store never answers: its first metrics call blocks until the test releases it."""

    name = "stuck"

    def __init__(self):
        self.release, self.calls = threading.Event(), 0

    def start(self, run_id, params, run_dir):
        return "nowhere"

    def log_metrics(self, step, values, timestamp_ms):
        self.calls += 1
        self.release.wait()  # until the test releases it, however long the run takes

    def log_weights(self, step, weights):
        pass

    def log_artifact(self, path, name):
        pass

    def finish(self, state):
        pass


def test_a_failing_or_slow_tracker_warns_once_and_neither_fails_nor_slows_the_run(tmp_path, monkeypatch):
    real_status, real_build = trackers.backend_status, trackers.build_trackers

    def status(name):  # wandb "not installed" here
        return Backend(name, False, None, "not installed", "pip install wandb") if name == "wandb" else \
            real_status(name)

    monkeypatch.setattr(trackers, "backend_status", status)
    stuck = StuckTracker()
    monkeypatch.setattr(trackers, "build_trackers", lambda ctx: [*real_build(ctx), stuck])
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    config = tracked_config({"backends": ["mlflow", "wandb"], "mlflow_uri": f"sqlite:///{blocker}/mlflow.db",
                             "flush_timeout_s": 1.0}, evaluation={"enabled": False})
    try:  # were the training loop to wait for a tracker, this run would never end
        run = workflow.run(config, tmp_path / "home")
        calls_while_stuck = stuck.calls  # read before the release lets the queued lines drain into it
    finally:
        stuck.release.set()
    assert run.read_status()["state"] == "completed" and calls_while_stuck == 1
    assert [m["step"] for m in run.metrics() if "loss" in m] == [1, 2, 3, 4]  # every step ran and was recorded
    warnings = [e["message"] for e in run.events() if e["type"] == "warning" and e.get("about") == "tracking"]
    assert sum("tracker wandb is off" in w and "pip install wandb" in w for w in warnings) == 1
    assert sum("tracker mlflow stopped" in w for w in warnings) == 1
    assert sum("still busy" in w for w in warnings) == 1
    assert len(warnings) == 3


def test_a_resumed_studio_run_reopens_its_mlflow_run_and_online_wandb_needs_a_key(tmp_path, monkeypatch):
    from studio_core.connectors.mlflow_tracker import MlflowTracker
    from studio_core.connectors.wandb_tracker import WandbTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = MlflowTracker(uri, "peft-studio", tmp_path)
    first.start("20261201-000000-run-abcd", {"training.max_steps": "4"}, tmp_path)
    first.log_metrics(1, {"loss": 2.0}, 1_000)
    first.finish("interrupted")
    again = MlflowTracker(uri, "peft-studio", tmp_path)  # the resumed run's new process
    assert "reopened" in again.start("20261201-000000-run-abcd", {"training.max_steps": "4"}, tmp_path)
    again.log_metrics(2, {"loss": 1.5}, 2_000)
    again.finish("completed")
    assert again.run_id == first.run_id
    assert [(m.step, m.value) for m in again.client.get_metric_history(again.run_id, "loss")] == [(1, 2.0), (2, 1.5)]

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc login either
    with pytest.raises(RuntimeError, match="WANDB_API_KEY"):
        WandbTracker("peft-studio", "online").start("r", {}, tmp_path)


def test_a_shared_studio_refuses_an_mlflow_store_outside_its_roots(tmp_path, studio_env, monkeypatch):
    from studio_core.share import shared_studio_problems

    monkeypatch.setenv("PEFT_STUDIO_SHARED", "1")
    outside = tracked_config({"backends": ["mlflow"], "mlflow_uri": f"sqlite:///{tmp_path}/elsewhere/mlflow.db"})
    [problem] = [p for p in shared_studio_problems(outside, studio_env) if p.field == "tracking.mlflow_uri"]
    assert "outside the folders this shared studio may read" in problem.message
    inside = tracked_config({"backends": ["mlflow"], "mlflow_uri": f"sqlite:///{studio_env}/team.db"})
    assert not [p for p in shared_studio_problems(inside, studio_env) if p.field == "tracking.mlflow_uri"]
    server = tracked_config({"backends": ["mlflow"], "mlflow_uri": "http://127.0.0.1:5000"})
    assert not [p for p in shared_studio_problems(server, studio_env) if p.field == "tracking.mlflow_uri"]
