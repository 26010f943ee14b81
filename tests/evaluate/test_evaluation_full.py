"""Evaluation on a tiny random Llama with a LoRA adapter: validation split, a test file, user prompts."""

import json

import pytest
import torch

from studio_core.config import validate_config
from studio_core.data.prepare import PreparedData
from studio_core.data.tokenize import tokenize_conversation
from studio_core.evaluate.basic import run_evaluation, validation_loss
from studio_core.models.resolve import load_model, load_tokenizer, resolve_model


def conversation(i):
    return [{"role": "user", "content": f"Say {i}"}, {"role": "assistant", "content": f"Number {i}"}]


@pytest.fixture(scope="module")
def tiny(model_cache):
    from peft import LoraConfig, get_peft_model

    resolved = resolve_model("tiny-random:llama", model_cache)
    tokenizer = load_tokenizer(resolved)
    torch.manual_seed(0)
    # init_lora_weights=False: a random (non-zero) adapter, so tuned really differs from base
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    return get_peft_model(load_model(resolved), lora).eval(), tokenizer


def config(tmp_path, **evaluation):
    test_file = tmp_path / "test.jsonl"
    test_file.write_text("".join(json.dumps({"prompt": f"Say {i}", "completion": f"Number {i}"}) + "\n"
                                 for i in range(100, 103)))
    return validate_config({
        "model": {"ref": "tiny-random:llama"}, "data": {"path": str(test_file)}, "training": {"per_device_batch_size": 2},
        "evaluation": {"max_rows": 4, "task_rows": 3, "max_new_tokens": 4, "test_path": str(test_file),
                       "prompts": ["What is two plus two?"], **evaluation},
    })


def val_data(tokenizer):
    rows = [conversation(i) for i in range(5)]
    tokens = [tokenize_conversation(tokenizer, r, 128) for r in rows]
    return PreparedData([], rows, [], tokens, {})


def test_base_and_tuned_on_val_and_test_file_with_user_prompts(tiny, tmp_path):
    model, tokenizer = tiny
    data = val_data(tokenizer)
    metrics = [{"step": s, "loss": 3 - 0.2 * s} for s in range(1, 9)] + [
        {"step": s, "val_loss": v} for s, v in ((0, 3.0), (4, 2.0), (8, 2.5))]
    calls = []
    report, answers = run_evaluation(model, tokenizer, data, config(tmp_path), "fp32", metrics=metrics,
                                     progress=lambda done, total: calls.append((done, total)))
    # 3 val + 3 test + 1 prompt, answered by base then tuned: counted batch by batch up to the total
    assert calls[-1] == (14, 14) and [d for d, _ in calls] == sorted(d for d, _ in calls) and len(calls) >= 6

    with model.disable_adapter():  # base is the adapter truly disabled: the same loss as measured directly
        assert report["base"]["val_loss"] == pytest.approx(validation_loss(model, data.val_tokens[:4], 0, 2))
    assert report["delta"]["val_loss"] == pytest.approx(report["tuned"]["val_loss"] - report["base"]["val_loss"])
    assert report["delta"]["val_loss"] != 0
    for side in ("base", "tuned"):
        assert set(report[side]["generation"]) == {"exact_match", "token_f1", "rouge_l"}
        assert report[side]["test"]["loss"] > 0 and report[side]["test"]["ppl"] > 1
    assert set(report["delta"]["test"]["generation"]) == {"exact_match", "token_f1", "rouge_l"}
    assert report["rows"]["test"] == {"loss": 3, "task": 3} and report["rows"]["val"] == {"loss": 4, "task": 3}
    assert report["overfitting"]["overfitting"] and report["overfitting"]["from_step"] == 4
    from studio_core.evaluate.general_text import general_text_perplexity

    general = report["general_text"]  # general text, not the task: base is the adapter disabled, tuned is not
    with model.disable_adapter():
        assert general["base_ppl"] == pytest.approx(general_text_perplexity(model, tokenizer))
    assert general["tuned_ppl"] == pytest.approx(general_text_perplexity(model, tokenizer))
    assert general["tuned_ppl"] != pytest.approx(general["base_ppl"])
    assert general["ratio"] == pytest.approx(general["tuned_ppl"] / general["base_ppl"])

    assert [a["split"] for a in answers] == ["prompts"] + ["val"] * 3 + ["test"] * 3  # user prompts come first
    assert answers[0]["prompt"] == "What is two plus two?" and answers[0]["reference"] is None
    assert answers[-1]["reference"] == "Number 102" and {"base", "tuned"} <= answers[-1].keys()


def test_metrics_list_chooses_the_generation_metrics(tiny, tmp_path):
    model, tokenizer = tiny
    cfg = config(tmp_path, metrics=["token_f1"], test_path=None, prompts=[])
    report, answers = run_evaluation(model, tokenizer, val_data(tokenizer), cfg, "fp32")
    assert set(report["tuned"]["generation"]) == {"token_f1"} and "test" not in report["tuned"]
    assert "overfitting" not in report and len(answers) == 3



def test_dora_is_evaluated_with_its_norm_cache_and_measures_the_same_as_without(model_cache, tmp_path):
    from unittest import mock

    import peft.tuners.lora.dora as dora_module
    from peft import LoraConfig, get_peft_model

    from studio_core.evaluate import basic

    resolved = resolve_model("tiny-random:llama", model_cache)
    tokenizer = load_tokenizer(resolved)
    torch.manual_seed(0)
    dora = LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], use_dora=True, init_lora_weights=False)
    model = get_peft_model(load_model(resolved), dora).eval()
    data, cfg = val_data(tokenizer), config(tmp_path, max_new_tokens=6)
    cache_on, real_generate = [], basic.generate

    def spy(*args, **kwargs):
        cache_on.append(dora_module.ENABLE_DORA_CACHING)
        return real_generate(*args, **kwargs)

    with mock.patch.object(basic, "generate", spy):
        report, answers = run_evaluation(model, tokenizer, data, cfg, "fp32")
    assert cache_on[:len(cache_on) // 2] == [False] * (len(cache_on) // 2)  # base: adapter off, nothing to cache
    assert cache_on[len(cache_on) // 2:] == [True] * (len(cache_on) // 2)  # tuned: through the DoRA cache
    assert dora_module.ENABLE_DORA_CACHING is False  # and switched off again after

    with mock.patch("peft.helpers.DoraCaching.__enter__"), mock.patch("peft.helpers.DoraCaching.__exit__"):
        uncached_report, uncached = run_evaluation(model, tokenizer, data, cfg, "fp32")
    assert [a["tuned"] for a in answers] == [a["tuned"] for a in uncached]
    assert report["tuned"]["val_loss"] == pytest.approx(uncached_report["tuned"]["val_loss"], rel=1e-5)
    assert report["tuned"]["val_loss"] != pytest.approx(report["base"]["val_loss"])  # the adapter is on
