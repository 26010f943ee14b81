"""Which compute precision a run uses, the dtype its frozen base is held in, and the autocast context for it."""

from __future__ import annotations

import contextlib


def resolve_precision(requested: str, profile) -> str:
    """The compute precision a run will use: 'auto' picks the fastest the hardware supports."""
    from studio_core.hardware import best_precision

    return best_precision(profile) if requested == "auto" else requested


def autocast(precision: str, device_type: str):
    """Mixed-precision autocast for bf16/fp16 on `device_type`; a no-op for fp32."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


@contextlib.contextmanager
def autocast_adapter_inputs(model, precision: str):
    """Training's context for a PEFT model under autocast: peft's cast of each adapter's input to the adapter's
    dtype (fp32) is turned off, since autocast casts every matmul's inputs itself; that cast and autocast's cast
    back to 16 bits cost two copies of the activation per adapted projection. A no-op for fp32.

    peft's own `helpers.disable_input_dtype_casting` does this, but fails on layers that never set the flag
    (IA3's and VeRA's: "'Linear' object has no attribute 'cast_input_dtype_enabled'", peft 0.21.2); here a layer
    without it counts as casting, which is what peft's `_cast_input_dtype` assumes."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)] if precision != "fp32" else []
    before = [getattr(layer, "cast_input_dtype_enabled", True) for layer in layers]
    for layer in layers:
        layer.cast_input_dtype_enabled = False
    try:
        yield
    finally:
        for layer, value in zip(layers, before):
            layer.cast_input_dtype_enabled = value


def base_dtype(cfg, precision: str) -> str:
    """The dtype the frozen base is held in for training: bf16 where training computes in bf16, else fp32.

    Under bf16 autocast every matmul runs in bf16 anyway; a base held in fp32 is cast to bf16 again in every
    forward pass (autocast caches casts only of weights that train), and its residual stream and elementwise work
    run in fp32. The adapter stays fp32 (peft keeps adapter weights in fp32 on a 16-bit base), so the optimizer
    updates fp32 weights as before. Kept in fp32 where the base itself is changed or measured in fp32: a 4-bit
    base (QLoRA), a method that rewrites the base at init (PiSSA, OLoRA), 2:4 pruning (its masks and quality
    table are taken on the base), differential privacy (its per-sample gradients were checked against brute
    force on an fp32 base, not on a 16-bit one), and a method whose registry entry says so (`bf16_base`:
    AdaLoRA). Merging loads a fresh fp32 base. Measured with `bench/train_throughput.py --levers` (the 'studio-'
    side holds the base in fp32).
    """
    from studio_core.methods import get_method
    from studio_core.train.adapters import rewrites_base

    method = get_method(cfg.method.name)
    keep_fp32 = (not method.bf16_base or method.loads_in_4bit or rewrites_base(cfg.method) or cfg.pruning.enabled
                 or cfg.privacy.enabled)
    return "bf16" if precision == "bf16" and not keep_fp32 else "fp32"
