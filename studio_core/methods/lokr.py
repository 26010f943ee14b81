"""LoKr (LyCORIS): the Kronecker product of a small and a low-rank factor."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from studio_core.methods.base import LINEAR, BuildContext, Method, TargetedMethod, task_type


class LokrMethod(TargetedMethod):
    name: Literal["lokr"] = Field("lokr", description="PEFT method.")
    r: int = Field(8, ge=1, le=1024, description="Rank of the low-rank Kronecker factor.")
    alpha: float = Field(16.0, gt=0, description="Scale of the update (alpha / r).")
    decompose_factor: int = Field(
        -1, description="Factor the weight shape is split by; -1 picks the factorisation closest to square."
    )
    rank_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on each rank during training.")
    module_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Probability of skipping a module's update.")


SECTIONS = (LokrMethod,)


def build_lokr(m, targets, ctx: BuildContext):
    from peft import LoKrConfig

    return LoKrConfig(
        r=m.r,
        alpha=m.alpha,
        decompose_factor=m.decompose_factor,
        rank_dropout=m.rank_dropout,
        module_dropout=m.module_dropout,
        target_modules=targets,
        task_type=task_type(),
    )


METHODS = (
    Method(
        "lokr",
        "LoKr",
        "Kronecker product of a small and a low-rank factor (LyCORIS)",
        build_lokr,
        layer_types=LINEAR,
        quantized_base=False,
    ),
)
