"""Training's CPU attention: the same loss and gradients as sdpa, used only while training, and sdpa beyond its
length limit."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import studio_core.train.attention as attention
from studio_core import stages, workflow
from studio_core.train.trainer import TrainerParts
from tests.train.test_training import tiny_config


def tiny_llama(dtype=torch.float32):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, attn_implementation="sdpa")
    return LlamaForCausalLM(config).to(dtype)


def loss_and_grads(model, padded: bool):
    ids = torch.randint(0, 96, (3, 24), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    if padded:  # right padding, as the studio's collator pads
        mask[1, 17:] = 0
        mask[2, 9:] = 0
    model.zero_grad()
    out = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100))
    out.loss.backward()
    return out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def counting(monkeypatch):
    calls = {"plain": 0, "sdpa": 0}
    plain, sdpa = attention.cpu_training_attention, attention.sdpa_forward

    def plain_counted(*args, **kwargs):
        calls["plain"] += 1
        return plain(*args, **kwargs)

    def sdpa_counted(*args, **kwargs):
        calls["sdpa"] += 1
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(attention, "cpu_training_attention", plain_counted)
    monkeypatch.setattr(attention, "sdpa_forward", sdpa_counted)
    return calls


@pytest.mark.parametrize("padded", [True, False])
def test_same_loss_and_gradients_as_sdpa_in_fp32(padded):
    model = tiny_llama()
    loss, grads = loss_and_grads(model, padded)
    with attention.training_attention(model) as switched:
        assert switched and model.config._attn_implementation == attention.NAME
        plain_loss, plain_grads = loss_and_grads(model, padded)
    assert model.config._attn_implementation == "sdpa"  # generation and export after training see sdpa again
    assert plain_loss == pytest.approx(loss.item(), abs=1e-6)
    worst = max((plain_grads[n] - g).abs().max().item() for n, g in grads.items())
    assert worst < 1e-6


def test_bf16_matches_sdpa_to_bf16_precision():
    model = tiny_llama(torch.bfloat16)
    loss, grads = loss_and_grads(model, True)
    with attention.training_attention(model):
        plain_loss, plain_grads = loss_and_grads(model, True)
    assert plain_loss.float().item() == pytest.approx(loss.float().item(), rel=1e-2)
    for name, grad in grads.items():
        scale = grad.float().abs().max().item() + 1e-6
        assert (plain_grads[name].float() - grad.float()).abs().max().item() / scale < 0.05, name


def test_the_plain_form_runs_up_to_the_limit_and_sdpa_beyond(monkeypatch):
    calls = counting(monkeypatch)
    model = tiny_llama()
    with attention.training_attention(model):
        loss_and_grads(model, True)  # 24 tokens: within the limit
        assert calls == {"plain": 2, "sdpa": 0}  # one call per layer
        monkeypatch.setattr(attention, "EAGER_MAX_KV", 16)
        loss_and_grads(model, True)
    assert calls == {"plain": 4, "sdpa": 2}  # the function was asked, and handed the 24 tokens to sdpa


def test_the_model_is_back_on_sdpa_after_an_error():
    model = tiny_llama()
    with pytest.raises(RuntimeError, match="boom"), attention.training_attention(model):
        raise RuntimeError("boom")
    assert model.config._attn_implementation == "sdpa"


def test_an_eager_model_keeps_its_attention():
    model = tiny_llama()
    model.set_attn_implementation("eager")
    with attention.training_attention(model) as switched:
        assert not switched and model.config._attn_implementation == "eager"


def test_a_run_trains_through_it_and_evaluates_on_sdpa(tmp_path, monkeypatch):
    from transformers import TrainerCallback

    calls = counting(monkeypatch)
    seen = {"steps": [], "plain_at_end": None}

    class Seen(TrainerCallback):  # the model's attention at each training step, and the calls when training ends
        def on_step_end(self, args, state, control, model=None, **kwargs):
            seen["steps"].append(model.get_base_model().config._attn_implementation)

        def on_train_end(self, args, state, control, **kwargs):
            seen["plain_at_end"] = calls["plain"]

    monkeypatch.setattr(stages, "trainer_parts", lambda ctx: TrainerParts(callbacks=[Seen()]))
    run = workflow.run(tiny_config(max_steps=2, eval_steps=2, save_steps=2), tmp_path)
    assert seen["steps"] == [attention.NAME, attention.NAME]
    assert seen["plain_at_end"] > 0  # training's forward and backward went through it
    assert (run.artifacts / "eval" / "metrics.json").is_file()
    assert calls["plain"] == seen["plain_at_end"]  # evaluation (base and tuned generation) ran on sdpa
