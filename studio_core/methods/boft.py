"""BOFT: an orthogonal rotation of each weight's input, factored into butterfly blocks."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from studio_core.errors import Problem
from studio_core.methods.base import LINEAR, BuildContext, Method, TargetedMethod, in_features, task_type
from studio_core.methods.oft import block_problems


class BoftMethod(TargetedMethod):
    name: Literal["boft"] = Field("boft", description="PEFT method.")
    block_size: int = Field(
        4, ge=1, description="Size of the butterfly blocks; must divide every target module's input features."
    )
    butterfly_factor: int = Field(
        1,
        ge=1,
        description="Number of butterfly factors; 1 is plain block-diagonal OFT. Each factor doubles "
        "the effective block size.",
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Multiplicative dropout on the butterfly blocks.")


SECTIONS = (BoftMethod,)


def build_boft(m, targets, ctx: BuildContext):
    from peft import BOFTConfig

    return BOFTConfig(
        boft_block_size=m.block_size,
        boft_n_butterfly_factor=m.butterfly_factor,
        boft_dropout=m.dropout,
        target_modules=targets,
        task_type=task_type(),
    )


def butterfly_problems(section, modules) -> list[Problem]:
    found = block_problems(section, modules)
    if found:
        return found
    # peft: block_num = in_features / block_size must be divisible by 2^(butterfly_factor - 1)
    factor = 2 ** (section.butterfly_factor - 1)
    bad = sorted(
        {
            f"{path.rsplit('.', 1)[-1]} ({in_features(mod)})"
            for path, mod in modules
            if (in_features(mod) // section.block_size) % factor
        }
    )
    if not bad:
        return []
    return [
        Problem(
            "method.butterfly_factor",
            f"{section.butterfly_factor} needs in_features / block_size "
            f"divisible by {factor} for {', '.join(bad)}; lower butterfly_factor or block_size",
        )
    ]


METHODS = (
    Method(
        "boft",
        "BOFT",
        "orthogonal rotation factored into butterfly blocks",
        build_boft,
        layer_types=LINEAR,
        quantized_base=False,
        fit_problems=butterfly_problems,
    ),
)
