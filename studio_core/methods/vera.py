"""VeRA: shared frozen random low-rank matrices with two trained scaling vectors per module."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from studio_core.methods.base import BuildContext, Method, TargetedMethod, task_type


class VeraMethod(TargetedMethod):
    name: Literal["vera"] = Field("vera", description="PEFT method.")
    r: int = Field(256, ge=1, le=8192, description="Rank of the shared frozen random matrices (VeRA uses a "
                   "large r: only two scaling vectors per module train).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the adapter input.")
    d_initial: float = Field(0.1, gt=0.0, description="Initial value of the trained d scaling vector.")


SECTIONS = (VeraMethod,)


def build(m, targets, ctx: BuildContext):
    from peft import VeraConfig

    return VeraConfig(r=m.r, vera_dropout=m.dropout, d_initial=m.d_initial, target_modules=targets,
                      save_projection=True, task_type=task_type())


METHODS = (
    Method("vera", "VeRA", "shared frozen random low-rank matrices with two trained scaling vectors per module",
           build, under_1_percent=True),
)
