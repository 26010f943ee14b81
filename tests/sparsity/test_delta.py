"""The adapter's update stays inside the base's 2:4 mask through training, and peft's merge keeps it there."""

import pytest
import torch
from peft import LoraConfig, get_peft_model

from studio_core.models.tiny import _family_config, build_random_model
from studio_core.sparsity.delta import mask_adapter
from studio_core.sparsity.pattern import violations
from studio_core.sparsity.prune import apply_masks, compute_masks, target_layers

TARGETS = ["q_proj", "v_proj", "up_proj", "down_proj"]


def pruned_adapter_model(dora: bool, masked: bool = True):
    model = build_random_model(_family_config("llama", 300))
    layers = target_layers(model, "auto")
    batch = {"input_ids": torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(0)),
             "attention_mask": torch.ones(2, 16, dtype=torch.long)}
    masks = compute_masks(model, layers, "wanda", [batch])
    apply_masks(layers, masks)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=TARGETS, use_dora=dora, lora_dropout=0.1))
    if masked:
        mask_adapter(peft_model, masks)
    return peft_model, masks, batch


def train(peft_model, batch, steps: int = 6):
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    peft_model.train()
    for _ in range(steps):
        peft_model(**batch, labels=batch["input_ids"]).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


@pytest.mark.parametrize("dora", [False, True], ids=["lora", "dora"])
def test_masked_update_keeps_the_pattern_after_training_and_merge(dora):
    peft_model, masks, batch = pruned_adapter_model(dora)
    before = {n: peft_model.get_base_model().get_submodule(n).weight.detach().clone() for n in masks}
    train(peft_model, batch)
    peft_model.eval()
    with torch.no_grad():
        trained = peft_model(**batch).logits
        merged = peft_model.merge_and_unload()
        after = merged(**batch).logits
    assert float((after - trained).abs().max() / trained.abs().max()) < 1e-5  # what trained is what merged
    assert sum(violations(merged.get_submodule(name).weight) for name in masks) == 0
    moved = [n for n in masks if not torch.equal(merged.get_submodule(n).weight, before[n])]
    assert moved and all(n.endswith(tuple(TARGETS)) for n in moved)  # the adapted layers moved, inside the mask


def test_without_masking_the_update_breaks_the_pattern():
    peft_model, masks, batch = pruned_adapter_model(dora=False, masked=False)
    train(peft_model, batch)
    merged = peft_model.merge_and_unload()
    assert sum(violations(merged.get_submodule(name).weight) for name in masks) > 0


def test_an_adapted_layer_without_a_mask_is_refused():
    peft_model, masks, _ = pruned_adapter_model(dora=False, masked=False)
    del masks["model.layers.0.self_attn.q_proj"]
    with pytest.raises(ValueError, match="model.layers.0.self_attn.q_proj has no 2:4 mask"):
        mask_adapter(peft_model, masks)


def test_qlora_prunes_the_nf4_base_reproducibly_and_merges_two_four(tmp_path):
    pytest.importorskip("bitsandbytes")
    from peft import PeftModel, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    from studio_core.models.resolve import nf4_config
    from studio_core.sparsity.prune import layer_report, state_digest

    build_random_model(_family_config("llama", 300)).save_pretrained(tmp_path)

    def load_4bit():
        return AutoModelForCausalLM.from_pretrained(tmp_path, quantization_config=nf4_config("fp32"),
                                                    device_map="cpu", dtype=torch.float32)

    model = load_4bit()
    layers = target_layers(model, "auto")
    assert type(layers["model.layers.0.self_attn.q_proj"]).__name__ == "Linear4bit"
    masks = compute_masks(model, layers, "magnitude")  # on the de-quantized NF4 weights
    apply_masks(layers, masks)  # re-quantized from the masked weights: NF4's zero is exact
    assert sum(r["violations"] for r in layer_report(layers)) == 0
    rebuilt = load_4bit()
    apply_masks(target_layers(rebuilt, "auto"), masks)
    assert state_digest(rebuilt) == state_digest(model)  # the merge base is the base that trained
    peft_model = get_peft_model(prepare_model_for_kbit_training(model, use_gradient_checkpointing=False),
                                LoraConfig(r=4, target_modules=TARGETS))
    mask_adapter(peft_model, masks)
    batch = {"input_ids": torch.randint(0, 300, (2, 16)), "attention_mask": torch.ones(2, 16, dtype=torch.long)}
    train(peft_model, batch, steps=3)
    peft_model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(rebuilt.dequantize(), str(tmp_path / "adapter"))
    mask_adapter(reloaded, masks)
    merged = reloaded.merge_and_unload()
    assert sum(violations(merged.get_submodule(name).weight) for name in masks) == 0
