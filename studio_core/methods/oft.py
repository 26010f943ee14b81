"""OFT: a block-diagonal orthogonal rotation of each weight's input."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from studio_core.errors import Problem
from studio_core.methods.base import LINEAR, LINEAR_4BIT, BuildContext, Method, TargetedMethod, in_features, task_type


class OftMethod(TargetedMethod):
    name: Literal["oft"] = Field("oft", description="PEFT method.")
    block_size: int = Field(
        32, ge=2, description="Size of the orthogonal blocks; must divide every target module's input features."
    )
    module_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Probability of dropping a whole block.")
    constrained: bool = Field(False, description="COFT: keep the rotation within eps of the identity.")
    eps: float = Field(6e-5, gt=0.0, description="COFT's bound on the rotation (when constrained).")
    block_share: bool = Field(False, description="One rotation shared by every block of a module.")


SECTIONS = (OftMethod,)


def build_oft(m, targets, ctx: BuildContext):
    from peft import OFTConfig

    return OFTConfig(
        r=0,
        oft_block_size=m.block_size,
        module_dropout=m.module_dropout,
        coft=m.constrained,
        eps=m.eps,
        block_share=m.block_share,
        target_modules=targets,
        task_type=task_type(),
    )


def problems(config) -> list:
    return []


def block_problems(section, modules) -> list[Problem]:
    bad = sorted(
        {
            f"{path.rsplit('.', 1)[-1]} ({in_features(mod)})"
            for path, mod in modules
            if in_features(mod) % section.block_size
        }
    )
    if bad:
        return [
            Problem(
                "method.block_size",
                f"{section.block_size} does not divide the input features of "
                f"{', '.join(bad)}; choose a block size that divides them all",
            )
        ]
    return []


METHODS = (
    Method(
        "oft",
        "OFT",
        "block-diagonal orthogonal rotation of each weight's input",
        build_oft,
        layer_types=LINEAR + LINEAR_4BIT,
        fit_problems=block_problems,
    ),
)
