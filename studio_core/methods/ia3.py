"""IA3: learned scaling vectors on keys, values and feed-forward activations."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from studio_core.errors import Problem
from studio_core.methods.base import BuildContext, Method, TargetedMethod, task_type


class IA3Method(TargetedMethod):
    name: Literal["ia3"] = Field("ia3", description="PEFT method.")
    feedforward_modules: list[str] | Literal["auto"] = Field(
        "auto",
        description="Which of the target modules are feed-forward (scaled on their input, not output); 'auto' "
        "takes the MLP projections among them.",
    )


SECTIONS = (IA3Method,)


def build(m, targets, ctx: BuildContext):
    from peft import IA3Config

    ff = list(ctx.feedforward) if m.feedforward_modules == "auto" else m.feedforward_modules
    return IA3Config(target_modules=targets, feedforward_modules=ff, task_type=task_type())


def problems(config) -> list[Problem]:
    m = config.method
    if isinstance(m, IA3Method) and isinstance(m.feedforward_modules, list) and isinstance(m.target_modules, list):
        extra = sorted(set(m.feedforward_modules) - set(m.target_modules))
        if extra:
            return [Problem("method.feedforward_modules", f"{', '.join(extra)} not in method.target_modules: "
                            "feed-forward modules must be a subset of the targets")]
    return []


METHODS = (
    Method("ia3", "IA3", "learned scaling vectors on keys, values and feed-forward activations", build,
           under_1_percent=True),
)
