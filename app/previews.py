"""Previews the step pages compute with the engine's own code (no run dir is written)."""

from __future__ import annotations

from typing import Any

import streamlit as st

from studio_core.config import RunConfig
from studio_core.runs import studio_home


def preview_data(config: RunConfig, rows: int = 5) -> dict[str, Any]:
    """Step 1 exactly as a run does it; returns its report plus the first normalised rows."""
    from studio_core.data.prepare import prepare_data
    from studio_core.models.resolve import load_tokenizer, resolve_in_home

    data = prepare_data(config.data, lambda: load_tokenizer(resolve_in_home(config.model)))
    return {**data.report, "preview": data.train[:rows]}


def inspect_model(config: RunConfig) -> dict[str, Any]:
    """Step 2's record (reference, digests) and the module names by type, from an empty (meta) model."""
    from studio_core.models.resolve import load_empty_model, resolve_in_home
    from studio_core.models.targets import default_target_modules, linear_module_names, module_names_by_type

    resolved = resolve_in_home(config.model)
    model = load_empty_model(resolved)
    return {"record": resolved.record(), "modules": module_names_by_type(model),
            "default_targets": default_target_modules(model), "linear": linear_module_names(model),
            "parameters": sum(p.numel() for p in model.parameters())}


@st.cache_data(show_spinner="Reading the model's module names (the embedded model is converted once, ~20 s)...",
               max_entries=16)
def module_names(ref: str, revision: str | None, home: str) -> dict[str, list[str]] | str:
    """The names a target-module picker offers (the model's linear layers) and the architecture's defaults; or why
    they could not be read."""
    from studio_core.config import ModelConfig
    from studio_core.errors import StudioError

    try:
        info = inspect_model(RunConfig(model=ModelConfig(ref=ref, revision=revision)))
    except (StudioError, OSError, ValueError) as e:
        return f"{e}"
    return {"linear": info["linear"], "default": info["default_targets"]}


def preset_for(config: RunConfig, preset: str) -> dict[str, Any]:
    """The config with `preset` applied, its rank and steps recommended from the data and the model."""
    from studio_core.train.presets import recommend_preset

    new, reasons = recommend_preset(config, preset, studio_home())
    return {"config": new, "reasons": reasons}


def fit_for(config: RunConfig) -> dict[str, Any]:
    """The config fitted to this machine's memory (unchanged where it fits), with the reasons."""
    from studio_core.train.fit import fit_config, with_changes

    fit = fit_config(config, studio_home())
    return {"config": with_changes(config, fit.changes).model_dump(mode="json"), "fits": fit.fits,
            "reasons": fit.reasons}
