"""Training projects only the answer positions onto the vocabulary (train/batching.py: answer_logits_only): the
loss and every adapter gradient equal those from full logits, and a model or method where that would not hold
keeps full logits."""

import torch
from peft import LoraConfig, PromptTuningConfig, get_peft_model

from studio_core.models.tiny import _family_config, build_random_model
from studio_core.train.batching import answer_logits_work, collate
from tests.privacy.test_gradients import examples


def _lora(seed: int = 1):
    model = build_random_model(_family_config("llama", 300), seed=seed)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                                  lora_dropout=0.0))
    torch.manual_seed(2)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:  # zero at init: give lora_A a gradient too
            torch.nn.init.normal_(p, std=0.02)
    return peft_model


def _loss_and_grads(model, batch):
    model.zero_grad()
    out = model(**batch)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_answer_only_logits_give_the_full_loss_and_gradients_from_fewer_positions():
    model, data = _lora(), examples(6)
    full, full_grads = _loss_and_grads(model, collate(data, 0))
    sliced_batch = collate(data, 0, answer_logits_only=True)
    sliced, sliced_grads = _loss_and_grads(model, sliced_batch)
    supervised = sum(e.supervised_tokens for e in data)
    # One logit row per supervised token (the position before it), instead of one per position of the batch.
    assert sliced.logits.shape == (supervised, 300) and full.logits.shape[:2] == sliced_batch["input_ids"].shape
    assert sliced.logits.shape[0] < full.logits.shape[0] * full.logits.shape[1]
    assert torch.allclose(sliced.loss, full.loss, atol=1e-6)
    assert full_grads.keys() == sliced_grads.keys() and len(full_grads) == 12
    for name, grad in full_grads.items():
        assert grad.abs().sum() > 0, name
        assert torch.allclose(sliced_grads[name], grad, atol=1e-6), name


def test_answer_logits_are_used_where_checked_to_match_and_not_for_prompt_tuning():
    data = examples(4)
    assert answer_logits_work(_lora(), data, 0)
    prompt = get_peft_model(build_random_model(_family_config("llama", 300), seed=1),
                            PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3))
    assert not answer_logits_work(prompt, data, 0)  # its virtual tokens move every position
    # A model whose loss ignores shift_labels would give another loss: the check catches it.
    model = _lora()
    base = model.get_base_model()
    original = base.loss_function

    def ignores_shift_labels(logits, labels, vocab_size, shift_labels=None, **kwargs):
        return original(logits=logits, labels=labels[..., : logits.shape[-2]] if labels.dim() > 1 else labels,
                        vocab_size=vocab_size, **kwargs)

    base.loss_function = ignores_shift_labels
    assert not answer_logits_work(model, data, 0)
