"""Prefix tuning: trained key/value prefixes at every layer; the base is untouched, so nothing merges."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from studio_core.methods.base import AdapterMethod, BuildContext, Method, task_type


class PrefixMethod(AdapterMethod):
    name: Literal["prefix"] = Field("prefix", description="PEFT method.")
    virtual_tokens: int = Field(20, ge=1, le=512, description="Trained key/value prefix length at every layer.")
    projection: bool = Field(
        False, description="Reparametrise the prefix through a 2-layer MLP (more parameters, often steadier)."
    )
    projection_hidden: int = Field(512, ge=1, description="Hidden size of that MLP (when projection is on).")


SECTIONS = (PrefixMethod,)


def build_prefix(m, targets, ctx: BuildContext):
    from peft import PrefixTuningConfig

    return PrefixTuningConfig(
        num_virtual_tokens=m.virtual_tokens,
        prefix_projection=m.projection,
        encoder_hidden_size=m.projection_hidden,
        task_type=task_type(),
    )


METHODS = (
    Method(
        "prefix",
        "Prefix tuning",
        "trained key/value prefixes at every layer; the base is untouched",
        build_prefix,
        under_1_percent=True,
        targeted=False,
        mergeable=False,
    ),
)
