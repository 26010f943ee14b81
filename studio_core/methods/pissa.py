"""PiSSA: LoRA initialised from the principal singular vectors of each weight (the base keeps the residual)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from studio_core.methods.base import LINEAR_CONV1D, BuildContext, Method, TargetedMethod, task_type


class PissaMethod(TargetedMethod):
    name: Literal["pissa"] = Field("pissa", description="PEFT method.")
    r: int = Field(16, ge=1, le=1024, description="Rank: the number of principal singular vectors trained.")
    alpha: float = Field(16.0, gt=0, description="Scale alpha / r; PiSSA expects alpha = r (scale 1).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the adapter input; PiSSA expects 0.")
    svd_iterations: int = Field(
        4, ge=0, le=64,
        description="Subspace iterations of the fast randomized SVD; 0 runs the exact SVD (slow on large weights).",
    )


SECTIONS = (PissaMethod,)


def build(m, targets, ctx: BuildContext):
    from peft import LoraConfig

    init = f"pissa_niter_{m.svd_iterations}" if m.svd_iterations else "pissa"
    return LoraConfig(r=m.r, lora_alpha=m.alpha, lora_dropout=m.dropout, target_modules=targets, bias="none",
                      init_lora_weights=init, task_type=task_type())


METHODS = (
    Method("pissa", "PiSSA", "LoRA initialised from the principal singular vectors of each weight", build,
           layer_types=LINEAR_CONV1D, quantized_base=False, rewrites_base=True),
)
