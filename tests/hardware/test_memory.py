"""studio_core.hardware.memory: the training-memory estimate behaves as its terms say (arithmetic only)."""

from __future__ import annotations

import itertools
from types import SimpleNamespace
from typing import Any

import pytest

from studio_core.hardware.memory import CPU_RUNTIME, GIB, MemoryEstimate, estimate_training_memory, model_shape

# SmolLM2-135M: the embedded model the estimate was calibrated on (bench/memory.py).
SMOLLM2 = {"layers": 30, "hidden": 576, "heads": 9, "kv_heads": 3, "intermediate": 1536, "vocab": 49152,
           "tied_embeddings": True}
BASE_PARAMS = 134_515_008
ADAPTER_PARAMS = 4_884_480


def estimate(**overrides: Any) -> MemoryEstimate:
    args: dict[str, Any] = {
        **SMOLLM2, "base_params": BASE_PARAMS, "adapter_params": ADAPTER_PARAMS, "batch": 4, "seq_len": 256,
        "weight_format": "fp32", "compute": "fp32", "gradient_checkpointing": False, "device": "cpu",
    }
    return estimate_training_memory(**{**args, **overrides})


def test_total_is_the_sum_of_the_components_and_as_gib_reports_them_all() -> None:
    e = estimate()
    parts = (e.weights, e.adapter, e.optimizer, e.gradients, e.activations, e.logits, e.allocator)
    assert all(p > 0 for p in parts)
    assert e.total == pytest.approx(sum(parts))
    gib = e.as_gib()
    assert set(gib) == {"weights", "adapter", "optimizer", "gradients", "activations", "logits", "allocator",
                        "per_sample_gradients", "total"}
    assert e.per_sample_gradients == 0  # only differential privacy keeps one gradient per example
    assert gib["total"] == pytest.approx(e.total / GIB, abs=1e-3)


def test_fp32_weights_are_four_bytes_a_parameter_and_adamw_keeps_two_moments() -> None:
    e = estimate()
    assert e.weights == 4 * BASE_PARAMS
    assert e.adapter == e.gradients == 4 * ADAPTER_PARAMS
    assert e.optimizer == 2 * e.adapter


def test_nf4_weights_on_cuda_are_about_a_seventh_of_fp32_apart_from_the_embeddings() -> None:
    fp32 = estimate(device="cuda").weights
    nf4 = estimate(device="cuda", weight_format="nf4").weights
    embeddings = 4 * SMOLLM2["vocab"] * SMOLLM2["hidden"]  # not quantized: kept at the fp32 it loads in
    assert (fp32 - embeddings) / (nf4 - embeddings) == pytest.approx(4 / 0.5625)
    assert 6.5 < (fp32 - embeddings) / (nf4 - embeddings) < 7.5
    untied = estimate(device="cuda", weight_format="nf4", tied_embeddings=False).weights
    assert untied - nf4 == pytest.approx(embeddings * (1 - 0.5625 / 4))  # the lm_head is not quantized either


def test_nf4_on_cpu_also_counts_the_mapped_fp32_checkpoint() -> None:
    on_cpu = estimate(weight_format="nf4").weights
    on_cuda = estimate(weight_format="nf4", device="cuda").weights
    assert on_cpu - on_cuda == 4 * BASE_PARAMS
    assert on_cpu > estimate().weights  # so on CPU a 4-bit base does not save memory


def test_gradient_checkpointing_lowers_activations_to_layer_inputs_plus_one_layer() -> None:
    full = estimate().activations
    ckpt = estimate(gradient_checkpointing=True).activations
    assert ckpt < full / 5
    tokens, layers, hidden = 4 * 256, SMOLLM2["layers"], SMOLLM2["hidden"]
    one_layer = (full - 3 * hidden * tokens * 4) / layers
    assert ckpt == pytest.approx(layers * hidden * tokens * 4 + one_layer + 3 * hidden * tokens * 4)


def test_checkpointing_leaves_logits_and_weights_and_lowers_the_cpu_heap_retention() -> None:
    full, ckpt = estimate(), estimate(gradient_checkpointing=True)
    assert (ckpt.logits, ckpt.weights) == (full.logits, full.weights)
    layers_part = full.allocator - CPU_RUNTIME
    assert ckpt.allocator == pytest.approx(CPU_RUNTIME + 0.75 * layers_part)


def test_logits_term_is_three_fp32_copies_of_tokens_by_vocab() -> None:
    e = estimate()
    assert e.logits == 3 * 4 * 256 * SMOLLM2["vocab"] * 4
    assert estimate(vocab=2 * SMOLLM2["vocab"]).logits == 2 * e.logits
    assert estimate(batch=8).logits == 2 * e.logits
    assert estimate(seq_len=512).logits == 2 * e.logits
    assert estimate(compute="bf16").logits > e.logits  # the loss upcasts: still fp32, plus the 16-bit grad


def test_logits_dominate_activations_under_checkpointing_for_a_large_vocab() -> None:
    e = estimate(gradient_checkpointing=True)
    assert e.logits > e.activations
    assert estimate(gradient_checkpointing=True, vocab=1000).logits < e.activations


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_total_grows_linearly_in_batch_and_in_seq_without_eager_attention(checkpointing: bool, device: str) -> None:
    totals = [estimate(batch=b, gradient_checkpointing=checkpointing, device=device).total for b in (1, 2, 3, 4)]
    steps = [b - a for a, b in itertools.pairwise(totals)]
    assert steps[0] > 0 and all(s == pytest.approx(steps[0]) for s in steps)
    fixed = totals[0] - steps[0]  # what no tokens cost: weights, adapter, optimizer, gradients (+ CPU runtime)
    e = estimate(batch=1, device=device)
    runtime = CPU_RUNTIME if device == "cpu" else 0
    assert fixed == pytest.approx(e.weights + e.adapter + e.optimizer + e.gradients + runtime)
    # per token: batch 2 x seq 256 costs what batch 1 x seq 512 does
    assert estimate(batch=2, gradient_checkpointing=checkpointing, device=device).total == pytest.approx(
        estimate(batch=1, seq_len=512, gradient_checkpointing=checkpointing, device=device).total)


def test_eager_attention_adds_a_seq_squared_term_per_layer() -> None:
    base = estimate(seq_len=512).activations
    eager = estimate(seq_len=512, attention_probs=True).activations
    assert eager - base == SMOLLM2["layers"] * SMOLLM2["heads"] * 512**2 * 4 * 4
    doubled = estimate(seq_len=1024, attention_probs=True).activations - estimate(seq_len=1024).activations
    assert doubled == pytest.approx(4 * (eager - base))


def test_bf16_halves_activations_and_cpu_alone_carries_the_allocator_term() -> None:
    assert estimate(compute="bf16").activations == pytest.approx(estimate().activations / 2)
    assert estimate(device="cuda").allocator == 0
    cpu = estimate()
    ends = 3 * SMOLLM2["hidden"] * 4 * 256 * 4  # embedding output, final norm: not per layer
    assert cpu.allocator == pytest.approx(CPU_RUNTIME + (cpu.activations - ends))
    assert cpu.total - estimate(device="cuda").total == pytest.approx(cpu.allocator)


def test_adapter_dropout_keeps_a_mask_and_a_copy_of_each_adapted_input() -> None:
    with_dropout = estimate().activations
    without = estimate(adapter_dropout=False).activations
    h, ffn, tokens, layers = SMOLLM2["hidden"], SMOLLM2["intermediate"], 4 * 256, SMOLLM2["layers"]
    assert with_dropout - without == pytest.approx(layers * tokens * 4 * (2 * (6 * h + ffn) - (3 * h + ffn)))


def test_grouped_query_attention_keeps_smaller_keys_and_values() -> None:
    gqa = estimate().activations
    mha = estimate(kv_heads=SMOLLM2["heads"]).activations
    h, kv, tokens, layers = SMOLLM2["hidden"], 576 * 3 // 9, 4 * 256, SMOLLM2["layers"]
    assert mha - gqa == pytest.approx(layers * tokens * 4 * 2 * (h - kv))


def test_the_embedded_model_at_4x256_needs_a_few_gib_on_cpu() -> None:
    """The bench measured 5.1-5.6 GiB peak RSS for this config (LoRA, fp32, no checkpointing)."""
    assert 4.5 * GIB < estimate().total < 6.0 * GIB


def test_model_shape_reads_a_transformers_config_with_defaults() -> None:
    llama = SimpleNamespace(num_hidden_layers=30, hidden_size=576, num_attention_heads=9, num_key_value_heads=3,
                            intermediate_size=1536, vocab_size=49152, tie_word_embeddings=True,
                            _attn_implementation="sdpa")
    assert model_shape(llama) == {**SMOLLM2, "attention_probs": False}
    gpt2_like = SimpleNamespace(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, vocab_size=1000,
                                _attn_implementation="eager")
    shape = model_shape(gpt2_like)
    assert shape["kv_heads"] == 4 and shape["intermediate"] == 256
    assert shape["tied_embeddings"] is False and shape["attention_probs"] is True
    estimate_training_memory(base_params=10_000, adapter_params=100, batch=1, seq_len=8, weight_format="fp32",
                             compute="fp32", gradient_checkpointing=False, **shape)


def test_private_training_counts_one_adapter_gradient_per_example_plus_the_clipped_sum_and_noise() -> None:
    public, private = estimate(), estimate(private=True)
    assert private.per_sample_gradients == (4 + 2) * 4 * ADAPTER_PARAMS
    assert private.total - public.total == pytest.approx(private.per_sample_gradients)
