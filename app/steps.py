"""The wizard's steps: their pages' headers, what each does, and whether the engine can run it yet."""

from __future__ import annotations

import streamlit as st

from app.forms import render_section
from studio_core.workflow import STAGES

WHAT_IT_DOES = {
    1: "Load your data file (JSONL, JSON, CSV, Parquet) or the built-in demo, detect its schema, validate it row "
       "by row, split it, apply the model's chat template with the loss on assistant tokens only, and digest it.",
    2: "The embedded SmolLM2-135M-Instruct, a local Hugging Face folder or a Hub id: safetensors only, with the "
       "digests of its weights and tokenizer recorded.",
    3: "One go/no-go report before a long run: target modules, trainable share, memory against what this machine "
       "has, precision support, truncation, rank sanity, and a time estimate from a measured micro-run.",
    4: "Build the PEFT model with any of 14 methods (LoRA, QLoRA, DoRA, rsLoRA, PiSSA, AdaLoRA, IA3, LoHa, LoKr, "
       "OFT, BOFT, VeRA, prefix, prompt tuning) on the architecture's projections; a preset fills every setting.",
    5: "2:4 masks on the base weights, with adapter updates kept inside the sparsity pattern.",
    6: "Train with gradient accumulation, mixed precision, evaluation every N steps, early stopping, checkpoints, "
       "resume and cancel; then save the adapter and a checked merged model.",
    7: "Rand-K / Top-K compression (with error feedback) of adapter gradients and of the shipped update.",
    8: "Validation loss, perplexity and the task metric for the base model (adapter disabled) against the tuned "
       "one, with held-out answers side by side.",
    9: "Export the merged model to ONNX and check ONNX Runtime against PyTorch.",
    10: "Build a TensorRT engine where there is a GPU, else an ONNX Runtime optimized model; records the engine "
        "really built.",
    11: "Pack the adapter, models and evidence (config, data and model digests, metrics, privacy budget) with a "
        "manifest of per-file digests.",
    12: "Sign the manifest (Ed25519 + ML-DSA-65), verify, and gate promotion by a policy.",
}
EXTRA_SECTIONS = {4: ("privacy",), 12: ("policy",)}


def stage(number: int):
    return STAGES[number - 1]


def is_available(number: int) -> bool:
    return stage(number).run is not None


def step_page(number: int) -> None:
    """A step's header and its config form (disabled, clearly labelled, if the engine cannot run it yet)."""
    s = stage(number)
    st.title(f"{number}. {s.title}")
    st.write(WHAT_IT_DOES[number])
    available = is_available(number)
    if not available:
        st.warning("Not available yet in this version of PEFT Studio: this step is shown so you can see what it "
                   "will do; its settings are disabled and a run cannot enable it.")
    render_section(s.section, disabled=not available)
    for extra in EXTRA_SECTIONS.get(number, ()):
        st.subheader(extra.capitalize())
        from studio_core.workflow import UNAVAILABLE_FEATURES

        render_section(extra, disabled=extra in UNAVAILABLE_FEATURES)


def preview_button(label: str, key: str, spinner: str, compute) -> dict | None:
    """A button that runs `compute(config)` on the session's valid config; the result is kept per session."""
    from app.session import validated_config
    from studio_core.errors import StudioError

    if st.button(label, key=key):
        config = validated_config()
        if config is None:
            st.error("Fix the settings marked on the step pages first.")
        else:
            with st.spinner(spinner):
                try:
                    st.session_state[f"{key}:result"] = compute(config)
                except StudioError as e:
                    st.error(str(e))
    return st.session_state.get(f"{key}:result")
