"""Whole runs (tiny random Llama) for the methods whose run differs: converted, pruned or not mergeable adapters."""

import json
import math

import pytest
import torch

from studio_core import workflow
from studio_core.config import validate_config


def method_run(tmp_path, method: dict, **training):
    config = validate_config({
        "model": {"ref": "tiny-random:llama"},
        "data": {"demo_rows": 120, "max_length": 384},
        "preflight": {"enabled": False},
        "method": method,
        "training": {"max_steps": 8, "eval_steps": 4, "save_steps": 4, "per_device_batch_size": 2,
                     "gradient_accumulation_steps": 1, "learning_rate": 5e-3, "eval_rows": 8, "precision": "fp32",
                     "early_stopping_patience": 0, **training},
        "evaluation": {"max_rows": 8, "task_rows": 2, "max_new_tokens": 4, "samples": 1},
    })
    run = workflow.run(config, tmp_path)
    assert run.read_status()["state"] == "completed"
    return run


def read(run, name):
    return json.loads((run.artifacts / name).read_text())


def base_and_adapter(run):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base_path = read(run, "adapter/base_model.json")["path"]
    return AutoModelForCausalLM.from_pretrained(base_path), PeftModel, str(run.artifacts / "adapter")


@pytest.mark.parametrize("precision", ["fp32", "auto"])  # auto: bf16 where the CPU has it, the studio's default
def test_pissa_adapter_is_converted_to_load_on_the_original_base_and_evaluates_against_it(tmp_path, precision):
    run = method_run(tmp_path, {"name": "pissa", "r": 4, "alpha": 4}, precision=precision)
    init = read(run, "training_init.json")
    assert init["backend"] == "transformers+peft" and "unsloth" in init["backend_reason"]  # pissa is not unsloth's
    config = read(run, "adapter/adapter_config.json")
    assert config["peft_type"] == "LORA" and config["r"] == 8  # PiSSA saved as a plain LoRA of rank 2r
    merge = read(run, "merge.json")
    assert merge["merged"] and merge["reload_check"]["relative_error"] < 1e-4 and merge["relative_error"] < 1e-4
    assert "converted" in merge["reload_check"]["what"]
    base, PeftModel, adapter = base_and_adapter(run)
    ids = torch.tensor([[5, 17, 99, 3, 42, 7]])
    with torch.no_grad():
        plain = base(input_ids=ids).logits
        tuned = PeftModel.from_pretrained(base, adapter).eval()
        with tuned.disable_adapter():
            assert torch.allclose(tuned(input_ids=ids).logits, plain)  # the base is untouched
        assert (tuned(input_ids=ids).logits - plain).abs().max() > 1e-4  # and the adapter changes it
    metrics = read(run, "eval/metrics.json")
    # "base" is the original model: a disabled PiSSA adapter would have left the residual weights instead
    assert metrics["base"]["val_loss"] != metrics["tuned"]["val_loss"]


def test_adalora_prunes_its_rank_budget_during_training(tmp_path):
    run = method_run(tmp_path, {"name": "adalora", "init_r": 6, "target_r": 2, "warmup_fraction": 0.25,
                                "final_fraction": 0.25})
    config = read(run, "adapter/adapter_config.json")
    assert config["peft_type"] == "ADALORA"
    ranks = config["rank_pattern"]  # written by update_and_allocate once the budget is pruned
    assert ranks, "update_and_allocate never ran"
    kept = sum(sum(mask) for mask in ranks.values())
    assert kept < 6 * len(ranks), "no rank was pruned"
    merge = read(run, "merge.json")  # the pruned ranks survive the save: stock peft reloads the same model
    assert merge["merged"] and merge["reload_check"]["relative_error"] < 1e-4


@pytest.mark.parametrize("method", [{"name": "prefix", "virtual_tokens": 4},
                                    {"name": "prompt", "virtual_tokens": 6, "init": "text",
                                     "init_text": "Audit the clause."}])
def test_virtual_token_methods_train_and_ship_the_adapter_alone(tmp_path, method):
    run = method_run(tmp_path, method)
    merge = read(run, "merge.json")
    assert merge["merged"] is False and "ships alone" in merge["reason"]
    assert merge["reload_check"]["relative_error"] < 1e-4
    assert not (run.artifacts / "merged").exists()
    losses = [m["loss"] for m in run.metrics() if "loss" in m]
    assert len(losses) == 8 and all(math.isfinite(loss) for loss in losses)
    evals = [m["val_loss"] for m in run.metrics() if "val_loss" in m]
    assert evals[-1] < evals[0]
    assert read(run, "adapter/adapter_config.json")["num_virtual_tokens"] == method["virtual_tokens"]
    base, PeftModel, adapter = base_and_adapter(run)
    tuned = PeftModel.from_pretrained(base, adapter).eval()
    with torch.no_grad():
        out = tuned.generate(input_ids=torch.tensor([[5, 17, 99]]), max_new_tokens=3, do_sample=False)
    assert out.shape[1] == 6


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_loftq_without_a_gpu_is_refused_at_training_init_naming_the_fix(tmp_path):
    from studio_core.workflow import StageFailed

    with pytest.raises(StageFailed) as e:
        method_run(tmp_path, {"name": "qlora", "init": "loftq", "r": 4})
    assert e.value.stage.number == 4 and "method.init" in str(e.value) and "use init=default" in str(e.value)


@pytest.mark.parametrize("name", ["dora", "ia3", "vera", "prompt"])
def test_methods_train_on_a_bf16_base_and_their_saved_adapter_reproduces_the_trained_model(tmp_path, name):
    """bf16 compute holds the base in bf16 (train/precision.py); IA3's and VeRA's layers lack peft's input-cast
    flag, prompt tuning adds fp32 virtual tokens to bf16 embeddings: each trains, and the reload check holds."""
    run = method_run(tmp_path, {"name": name}, precision="bf16", max_steps=2, eval_steps=1, save_steps=1)
    assert read(run, "training_init.json")["base_dtype"] == "bfloat16"
    assert read(run, "merge.json")["reload_check"]["relative_error"] < 1e-4
    assert [m["step"] for m in run.metrics() if "loss" in m] == [1, 2]


def test_adalora_keeps_an_fp32_base_under_bf16_compute(tmp_path):
    run = method_run(tmp_path, {"name": "adalora"}, precision="bf16", max_steps=2, eval_steps=1, save_steps=1)
    assert read(run, "training_init.json")["base_dtype"] == "float32"
    assert read(run, "merge.json")["reload_check"]["relative_error"] < 1e-4
