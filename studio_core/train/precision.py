"""Which compute precision a run uses, and the autocast context for it."""

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
