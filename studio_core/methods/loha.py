"""LoHa (LyCORIS): the Hadamard product of two low-rank updates."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from studio_core.methods.base import LINEAR, BuildContext, Method, TargetedMethod, task_type


class LohaMethod(TargetedMethod):
    name: Literal["loha"] = Field("loha", description="PEFT method.")
    r: int = Field(8, ge=1, le=1024, description="Rank of each of the two Hadamard factors.")
    alpha: float = Field(16.0, gt=0, description="Scale of the update (alpha / r).")
    rank_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on each rank during training.")
    module_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Probability of skipping a module's update.")


SECTIONS = (LohaMethod,)


def build_loha(m, targets, ctx: BuildContext):
    from peft import LoHaConfig

    return LoHaConfig(
        r=m.r,
        alpha=m.alpha,
        rank_dropout=m.rank_dropout,
        module_dropout=m.module_dropout,
        target_modules=targets,
        task_type=task_type(),
    )


METHODS = (
    Method(
        "loha",
        "LoHa",
        "Hadamard product of two low-rank updates (LyCORIS)",
        build_loha,
        layer_types=LINEAR,
        quantized_base=False,
    ),
)
