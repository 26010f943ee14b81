"""Training's CPU attention: plain matmul-softmax attention for short sequences, PyTorch's SDPA for the rest.

On CPU, transformers' `sdpa` runs PyTorch's flash-attention kernel, whose backward pass costs about ten times its
forward with a large fixed part per call, so at short lengths plain attention (two batched matmuls and an fp32
softmax, what transformers' `eager` does) is faster. `bench/attention.py` on the embedded model's shape (9 query
heads, 3 key/value heads, head dim 64, bf16, 2 threads; forward plus backward per call), 2026-12-04: at batch 8,
31.5 ms sdpa against 8.5 plain at 128 tokens and 23.7 against 16.3 at 192; at 448 tokens sdpa wins, 74.3 against
126.3; at batch 4 the crossover is lower (11.0 against 13.2 at 192). `EAGER_MAX_KV` = 192 keeps the plain form
where it won at batch 8 and 16. The demo's rows are 110-165 tokens, so all its batches take the plain form.

`training_attention(model)` registers `cpu_training_attention` with transformers' `AttentionInterface` (with
sdpa's boolean masks, `AttentionMaskInterface`) and switches a CPU model that runs `sdpa` to it while training
(the Trainer's steps and its validation, and the pre-flight's micro-run that times them); the model is back on
`sdpa` afterwards, so evaluation, generation and export run what they always did. The plain form keeps the
softmax probabilities for backward (4 bytes each in fp32, plus 2 for the bf16 copy), which the training-memory
estimate counts (`studio_core/train/fit.py: estimate_for`); the length limit bounds that cost.
"""

from __future__ import annotations

import contextlib

NAME = "studio_cpu_training"
EAGER_MAX_KV = 192  # the longest key length the plain form is used for (bench/attention.py: the crossover)


def cpu_training_attention(module, query, key, value, attention_mask, dropout: float = 0.0,
                           scaling: float | None = None, is_causal: bool | None = None, **kwargs):
    """transformers' attention-function signature. Falls back to `sdpa_attention_forward` for anything but a
    full-sequence pass (query length = key length, no cache offset) of at most `EAGER_MAX_KV` tokens on CPU
    without position bias, soft-capping or attention sinks."""
    import torch
    from transformers.integrations.sdpa_attention import repeat_kv

    q_len, kv_len = query.shape[2], key.shape[2]
    special = any(kwargs.get(k) is not None for k in ("position_bias", "softcap", "s_aux", "sinks"))
    if q_len != kv_len or kv_len > EAGER_MAX_KV or query.device.type != "cpu" or special:
        return sdpa_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                            is_causal=is_causal, **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    scores = torch.matmul(query, key.transpose(2, 3)) * (query.shape[-1] ** -0.5 if scaling is None else scaling)
    if attention_mask is None and (is_causal if is_causal is not None else getattr(module, "is_causal", True)):
        attention_mask = torch.ones(q_len, kv_len, dtype=torch.bool, device=query.device).tril()
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:  # sdpa's convention: True attends
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    probs = torch.nn.functional.dropout(probs, p=dropout, training=module.training)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), None


def sdpa_forward(*args, **kwargs):
    """transformers' `sdpa_attention_forward`, what the model runs outside training."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(*args, **kwargs)


def register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, cpu_training_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)


def _base(model):
    """The transformers model under a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def uses_training_attention(model) -> bool:
    """Whether `training_attention` switches this model: a CPU model on `sdpa` whose modeling code dispatches
    through transformers' `AttentionInterface` (others keep their attention)."""
    base = _base(model)
    config = getattr(base, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    try:
        on_cpu = next(base.parameters()).device.type == "cpu"
    except StopIteration:
        return False
    can_set = getattr(type(base), "_can_set_attn_implementation", None)
    return on_cpu and callable(can_set) and bool(can_set())


@contextlib.contextmanager
def training_attention(model):
    """Training's context: `cpu_training_attention` where `uses_training_attention(model)`, else a no-op.
    Yields whether it switched."""
    if not uses_training_attention(model):
        yield False
        return
    base = _base(model)
    register()
    base.set_attn_implementation(NAME)
    try:
        yield True
    finally:
        base.set_attn_implementation("sdpa")
