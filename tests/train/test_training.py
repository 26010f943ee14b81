"""Training on tiny random models: it learns, checkpoints, resumes, cancels, saves and merges."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from studio_core import workflow
from studio_core.config import validate_config
from studio_core.errors import CancelledError, ConfigError
from studio_core.runs import RunStore


def tiny_config(**training):
    return validate_config({
        "model": {"ref": "tiny-random:llama"},
        "data": {"demo_rows": 120, "max_length": 384},
        "preflight": {"enabled": False},
        "training": {"max_steps": 6, "eval_steps": 2, "save_steps": 2, "per_device_batch_size": 2,
                     "gradient_accumulation_steps": 1, "learning_rate": 5e-3, "eval_rows": 8,
                     "precision": "fp32", **training},
        "evaluation": {"max_rows": 8, "task_rows": 4, "max_new_tokens": 8, "samples": 2},
    })


def read(run, name):
    return json.loads((run.artifacts / name).read_text())


def test_loss_goes_down_and_every_step_is_recorded(tmp_path):
    run = workflow.run(tiny_config(max_steps=12, eval_steps=4, save_steps=4), tmp_path)
    metrics = run.metrics()
    train = [m for m in metrics if "loss" in m]
    evals = [m for m in metrics if "val_loss" in m]
    assert [m["step"] for m in train] == list(range(1, 13))
    for m in train:
        assert {"epoch", "lr", "grad_norm", "tokens_per_s", "elapsed_s"} <= m.keys() and m["tokens_per_s"] > 0
    assert [m["step"] for m in evals] == [0, 4, 8, 12]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    assert sum(m["loss"] for m in train[-3:]) < sum(m["loss"] for m in train[:3])
    assert evals[0]["val_ppl"] == pytest.approx(2.718281828 ** evals[0]["val_loss"], rel=1e-6)
    progress = [e for e in run.events() if e["type"] == "progress"]
    assert progress[-1]["step"] == 12 and progress[-1]["eta_s"] == 0


def test_adapter_loads_in_stock_peft_in_a_fresh_process_and_matches_merged(tmp_path):
    run = workflow.run(tiny_config(), tmp_path)
    adapter = run.artifacts / "adapter"
    assert {"adapter_config.json", "adapter_model.safetensors", "base_model.json"} <= set(os.listdir(adapter))
    assert json.loads((adapter / "base_model.json").read_text())["weight_sha256"]
    assert json.loads((adapter / "adapter_config.json").read_text())["peft_type"] == "LORA"
    assert read(run, "merge.json")["relative_error"] < 1e-4
    base_path = json.loads((adapter / "base_model.json").read_text())["path"]
    code = textwrap.dedent(f"""
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM
        base = AutoModelForCausalLM.from_pretrained({base_path!r})
        tuned = PeftModel.from_pretrained(base, {str(adapter)!r}).eval()
        merged = AutoModelForCausalLM.from_pretrained({str(run.artifacts / 'merged')!r}).eval()
        ids = torch.tensor([[5, 17, 99, 3, 42, 7]])
        with torch.no_grad():
            a, b = tuned(input_ids=ids).logits, merged(input_ids=ids).logits
            with tuned.disable_adapter():
                c = tuned(input_ids=ids).logits
        print(float((a - b).abs().max() / a.abs().max()), float((a - c).abs().max()))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    merged_error, adapter_effect = map(float, out.stdout.split())
    assert merged_error < 1e-4
    assert adapter_effect > 1e-4  # the adapter really changed the model


def cancelled_at_step_3(tmp_path):
    """A tiny run cancelled from its progress events at step 3 (it checkpoints that step)."""
    cancel = threading.Event()

    def on_event(event):
        if event["type"] == "progress" and event["step"] == 3:
            cancel.set()

    with pytest.raises(CancelledError):
        workflow.run(tiny_config(), tmp_path, cancel=cancel, on_event=on_event)
    (run,) = RunStore(tmp_path).list()
    return run


def test_cancel_stops_at_a_step_and_resume_finishes_the_same_step_count(tmp_path):
    run = cancelled_at_step_3(tmp_path)
    assert run.read_status()["state"] == "cancelled"
    assert (run.path / "checkpoints" / "checkpoint-3").is_dir()
    resumed = workflow.run(tiny_config(), tmp_path, resume=run.run_id)
    assert resumed.read_status()["state"] == "completed"
    assert read(resumed, "training.json")["steps"] == 6
    steps = [m["step"] for m in resumed.metrics() if "loss" in m]
    assert steps == list(range(1, 7))  # steps replayed after the checkpoint are not counted twice


def test_a_checkpoint_half_written_when_the_process_died_is_dropped_and_the_one_before_resumes(tmp_path):
    run = cancelled_at_step_3(tmp_path)
    partial = run.path / "checkpoints" / "checkpoint-5"  # weights written, optimizer and trainer state not yet
    partial.mkdir()
    (partial / "adapter_config.json").write_text("{}")
    resumed = workflow.run(tiny_config(), tmp_path, resume=run.run_id)
    assert resumed.read_status()["state"] == "completed"
    assert read(resumed, "training.json")["steps"] == 6
    assert [m["step"] for m in resumed.metrics() if "loss" in m] == list(range(1, 7))


def test_a_run_killed_after_its_last_checkpoint_resumes_without_training_further(tmp_path):
    from safetensors.torch import load_file

    run = workflow.run(tiny_config(), tmp_path)
    trained = load_file(run.artifacts / "adapter" / "adapter_model.safetensors")
    status = run.read_status()  # as if the process died in step 8, after training had checkpointed step 6
    status["state"] = "interrupted"
    run.write_status(status)
    resumed = workflow.run(tiny_config(), tmp_path, resume=run.run_id)
    assert resumed.read_status()["state"] == "completed"
    assert read(resumed, "training.json")["steps"] == 6
    assert [m["step"] for m in resumed.metrics() if "loss" in m] == list(range(1, 7))  # no step 7
    again = load_file(resumed.artifacts / "adapter" / "adapter_model.safetensors")
    assert again.keys() == trained.keys() and all((again[k] == trained[k]).all() for k in trained)


def test_killed_run_resumes_from_its_checkpoint_like_an_uninterrupted_one(tmp_path):
    args = ["--model", "tiny-random:llama", "--set", "preflight.enabled=false", "--set", "evaluation.enabled=false",
            "--set", "data.demo_rows=120", "--set", "data.max_length=384", "--set", "training.max_steps=8",
            "--set", "training.eval_steps=2", "--set", "training.save_steps=2", "--set", "training.precision=fp32",
            "--set", "training.per_device_batch_size=2", "--set", "training.gradient_accumulation_steps=1",
            "--set", "training.early_stopping_patience=0", "--set", "training.eval_rows=4"]
    exe = os.path.join(os.path.dirname(sys.executable), "peft-studio")
    straight = subprocess.run([exe, "run", *args, "--home", str(tmp_path / "a")], capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr
    proc = subprocess.Popen([exe, "run", *args, "--home", str(tmp_path / "b")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        runs = RunStore(tmp_path / "b").list()
        if runs and (runs[0].path / "checkpoints" / "checkpoint-4").is_dir() and \
                any(m.get("step", 0) >= 5 for m in runs[0].metrics()):
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    (run,) = RunStore(tmp_path / "b").list()
    assert run.read_status()["state"] == "interrupted"
    resumed = subprocess.run([exe, "run", "--resume", run.run_id, "--home", str(tmp_path / "b")],
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert run.read_status()["state"] == "completed"
    (reference,) = RunStore(tmp_path / "a").list()
    assert read(run, "training.json")["steps"] == read(reference, "training.json")["steps"] == 8
    last = [m for m in run.metrics() if "loss" in m][-1]
    last_ref = [m for m in reference.metrics() if "loss" in m][-1]
    assert last["step"] == last_ref["step"] == 8
    assert last["loss"] == pytest.approx(last_ref["loss"], rel=1e-3)  # same batches, same RNG: same trajectory


def test_evaluation_compares_base_with_adapter_disabled_and_tuned(tmp_path):
    run = workflow.run(tiny_config(max_steps=8, eval_steps=4, save_steps=4, eval_rows=8), tmp_path)
    report = read(run, "eval/metrics.json")
    step0 = next(m for m in run.metrics() if m.get("step") == 0 and "val_loss" in m)
    assert report["base"]["val_loss"] == pytest.approx(step0["val_loss"], rel=1e-3)  # adapter off == untrained
    assert report["tuned"]["val_loss"] < report["base"]["val_loss"]
    assert report["task_metric"] == "verdict_accuracy"
    verdicts = report["tuned"]["task"]["verdicts"]  # the decision against always giving the common verdict
    assert verdicts["rows"] == report["rows"]["task"] and verdicts["accuracy"] == report["tuned"]["task"]["value"]
    assert sum(r["rows"] for r in verdicts["per_rule"].values()) == verdicts["rows"]
    assert "other" not in verdicts["per_rule"]  # every demo prompt's rule was recognised
    assert "majority-class baseline" in next(e for e in run.events() if e["type"] == "evaluated")["message"]
    samples = [json.loads(line) for line in (run.artifacts / "eval" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2 and {"prompt", "reference", "base", "tuned"} <= samples[0].keys()


def test_full_fine_tuning_by_mistake_is_refused(tmp_path):
    # r=64 LoRA on every projection of a hidden-64 model is more parameters than the base itself.
    config = tiny_config()
    config = config.model_copy(update={"method": config.method.model_copy(update={"r": 64})})
    with pytest.raises(workflow.StageFailed) as e:
        workflow.run(config, tmp_path)
    assert isinstance(e.value.cause, ConfigError) and "not frozen" in str(e.value)


def test_simulation_ships_its_tiny_base_so_the_adapter_loads(tmp_path):
    config = tiny_config().model_copy(update={"simulate": True})
    run = workflow.run(config, tmp_path)
    record = json.loads((run.artifacts / "adapter" / "base_model.json").read_text())
    assert record["simulation_base"] == "artifacts/simulation-base"
    assert (run.artifacts / "simulation-base" / "model.safetensors").is_file()
    assert read(run, "training.json")["simulated"] is True


def test_qlora_trains_a_step_on_cpu_and_merges_into_the_dequantized_base(tmp_path):
    config = tiny_config(max_steps=2, eval_steps=1, save_steps=1)
    config = config.model_copy(update={"method": config.method.model_copy(update={"name": "qlora"}),
                                       "simulate": False})
    run = workflow.run(config, tmp_path)
    assert read(run, "training_init.json")["base_loaded_in_4bit"] is True
    assert [m["step"] for m in run.metrics() if "loss" in m] == [1, 2]
    merge = read(run, "merge.json")
    assert "de-quantized" in merge["into"] and merge["relative_error"] < 1e-4


def test_qlora_gradients_after_an_evaluation_equal_those_without_one(tmp_path):
    """bitsandbytes repacks 4-bit weights for CPU inference at the first eval forward; training must not see that."""
    import torch

    from studio_core.methods import method_config
    from studio_core.models.resolve import load_model, resolve_model
    from studio_core.train.adapters import apply_method

    resolved = resolve_model("tiny-random:llama", Path(os.environ["PEFT_STUDIO_MODEL_CACHE"]))
    ids = torch.randint(3, 250, (2, 24), generator=torch.Generator().manual_seed(0))

    def lora_grads(evaluate_first: bool):
        torch.manual_seed(0)
        model = apply_method(load_model(resolved, quantize_4bit=True, compute_dtype="bf16"),
                             method_config("qlora", r=4), ["q_proj", "v_proj", "down_proj"])
        for name, p in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.02)  # non-zero B, so gradients reach lora_A of lower layers too
        if evaluate_first:
            model.eval()
            with torch.no_grad():
                model(input_ids=ids)
        model.train()
        model(input_ids=ids, labels=ids).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    reference, after_eval = lora_grads(False), lora_grads(True)
    assert reference.keys() == after_eval.keys()
    for name in reference:
        torch.testing.assert_close(after_eval[name], reference[name], rtol=1e-3, atol=1e-6, msg=name)


def test_early_stopping_ships_the_best_checkpoint_and_reports_its_own_val_loss(tmp_path):
    from safetensors.torch import load_file

    # A learning rate this high overshoots within a few steps, so validation loss stops improving.
    run = workflow.run(tiny_config(max_steps=30, eval_steps=1, save_steps=2, learning_rate=0.3,
                                   early_stopping_patience=2), tmp_path)
    summary = read(run, "training.json")
    assert summary["stopped_early"] and summary["steps"] < 30
    evals = {m["step"]: m["val_loss"] for m in run.metrics() if "val_loss" in m and m["step"] > 0}
    best_step = int(summary["best_checkpoint"].rsplit("-", 1)[1])
    assert best_step % 2 == 0  # a checkpoint step
    assert summary["best_checkpoint_val_loss"] == pytest.approx(evals[best_step], rel=1e-6)
    assert summary["best_checkpoint_val_loss"] == min(v for s, v in evals.items() if s % 2 == 0)
    assert summary["best_val_loss"] == pytest.approx(min(evals.values()), rel=1e-6)
    shipped = load_file(run.artifacts / "adapter" / "adapter_model.safetensors")
    kept = load_file(run.path / "checkpoints" / summary["best_checkpoint"] / "adapter_model.safetensors")
    assert shipped.keys() == kept.keys() and all((shipped[k] == kept[k]).all() for k in shipped)


def test_the_overfitting_warning_is_recorded_as_a_run_event(tmp_path):
    """Through the real RunContext.emit (its first argument is the event's type): the warning lands in events.jsonl."""
    from studio_core.context import RunContext
    from studio_core.train.trainer import StudioCallback

    config = tiny_config()
    run = RunStore(tmp_path).create(config.model_dump_json(), "20261201-000000-overfit-0000", ["training_exec"], False)
    ctx = RunContext(config=config, run=run, home=tmp_path, cancel=threading.Event())
    callback = StudioCallback(ctx.emit, lambda **m: None, threading.Event(), 10)
    callback.train_losses = [2.0, 1.8, 1.0, 0.9]  # falling
    callback.val_losses = [(2, 1.0), (4, 1.1), (6, 1.2)]  # rising on each of the last two evaluations
    callback._check_overfitting(6)
    (warning,) = [e for e in run.events() if e["type"] == "warning"]
    assert warning["warning"] == "overfitting" and warning["step"] == 6 and "1.0000 -> 1.1000 -> 1.2000" in \
        warning["message"]


def test_a_bf16_run_trains_fp32_adapters_on_a_bf16_base_and_ships_them_onto_the_fp32_base(tmp_path):
    """Under bf16 autocast the frozen base is held in bf16 (train/precision.py: base_dtype): the adapter still
    trains and ships in fp32, reloads onto a fresh base and merges into the fp32 weights."""
    from safetensors.torch import load_file

    run = workflow.run(tiny_config(max_steps=8, eval_steps=4, save_steps=4, precision="bf16"), tmp_path)
    init = read(run, "training_init.json")
    assert (init["precision"], init["base_dtype"]) == ("bf16", "bfloat16")
    evals = [m for m in run.metrics() if "val_loss" in m]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    weights = load_file(run.artifacts / "adapter" / "adapter_model.safetensors")
    assert {str(w.dtype) for w in weights.values()} == {"torch.float32"}
    merge = read(run, "merge.json")
    assert merge["into"] == "the fp32 base weights" and merge["relative_error"] < 1e-4
    assert merge["reload_check"]["relative_error"] < 1e-4


@pytest.mark.parametrize("change", [{"privacy": {"enabled": True}}, {"pruning": {"enabled": True}},
                                    {"method": {"name": "qlora"}}, {"method": {"name": "pissa"}},
                                    {"training": {"precision": "fp32"}}])
def test_the_base_stays_fp32_where_it_is_changed_measured_or_computed_in_fp32(change):
    from studio_core.train.precision import base_dtype

    data = {"training": {"precision": "bf16"}}
    for section, fields in change.items():
        data[section] = {**data.get(section, {}), **fields}
    cfg = validate_config(data)
    assert base_dtype(cfg, cfg.training.precision) == "fp32"
    assert base_dtype(validate_config({"training": {"precision": "bf16"}}), "bf16") == "bf16"


def test_adapter_inputs_go_uncast_only_inside_training_and_the_loss_is_the_same(model_cache):
    """peft casts each adapter's input to the adapter's fp32; under autocast that cast is redundant, so training
    turns it off (autocast_adapter_inputs): the same loss, and the cast is back once training is over."""
    import torch
    from peft import LoraConfig, get_peft_model
    from peft.tuners.tuners_utils import BaseTunerLayer

    from studio_core.models.resolve import load_model, resolve_model
    from studio_core.train.precision import autocast, autocast_adapter_inputs

    torch.manual_seed(0)
    model = get_peft_model(load_model(resolve_model("tiny-random:llama", model_cache), dtype="bf16"),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    assert {str(layer.lora_A["default"].weight.dtype) for layer in layers} == {"torch.float32"}
    ids = torch.tensor([[5, 17, 99, 3, 42, 7]])
    with autocast("bf16", "cpu"):
        plain = model(input_ids=ids, labels=ids).loss
        with autocast_adapter_inputs(model, "bf16"):
            assert not any(layer.cast_input_dtype_enabled for layer in layers)
            uncast = model(input_ids=ids, labels=ids).loss
    assert all(layer.cast_input_dtype_enabled for layer in layers)
    assert float(uncast) == float(plain)
    with autocast_adapter_inputs(model, "fp32"):
        assert all(layer.cast_input_dtype_enabled for layer in layers)
