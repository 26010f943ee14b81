"""The wizard's steps: their pages' headers, what each does, their state, and Back / Next between them."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app.forms import render_section
from studio_core.workflow import STAGES, UNAVAILABLE_FEATURES

PAGES = Path(__file__).resolve().parent.parent / "pages"
HOME_PAGE = PAGES / "home.py"

WHAT_IT_DOES = {
    1: "Load your data file (JSONL, JSON, CSV, Parquet) or the built-in demo, detect its schema, validate it row "
       "by row, split it, apply the model's chat template with the loss on assistant tokens only, and digest it.",
    2: "The embedded SmolLM2-135M-Instruct, a local Hugging Face folder or a Hub id: safetensors only, with the "
       "digests of its weights and tokenizer recorded.",
    3: "One go/no-go report before a long run: target modules, trainable share, memory against what this machine "
       "has, precision support, truncation, rank sanity, and a time estimate from a measured micro-run.",
    4: "Build the PEFT model with any of 14 methods (LoRA, QLoRA, DoRA, rsLoRA, PiSSA, AdaLoRA, IA3, LoHa, LoKr, "
       "OFT, BOFT, VeRA, prefix, prompt tuning) on the architecture's projections; a preset fills every setting.",
    5: "Put 2:4 sparsity masks on the base weights (magnitude or Wanda) before the adapter is built, keep the "
       "adapter's update inside that pattern while it trains, and check that the merged model is exactly 2:4; the "
       "pruned tensors also ship compressed. LoRA, DoRA, rsLoRA and QLoRA.",
    6: "Train with gradient accumulation, mixed precision, evaluation every N steps, early stopping, checkpoints, "
       "resume and cancel, on one process or several (torchrun); then save the adapter and a checked merged model.",
    7: "Compress the adapter's gradients between training processes (a DDP hook: Rand-K, or Top-K with error "
       "feedback) and ship the trained update as a sparse top-k file, with its size against validation loss.",
    8: "Validation loss, perplexity and the task metric for the base model (adapter disabled) against the tuned "
       "one, with held-out answers side by side.",
    9: "Export the merged model to ONNX and check ONNX Runtime against PyTorch.",
    10: "Build engines that generate from the merged model: a KV-cache ONNX model (ONNX Runtime GenAI, int4/int8) "
        "and GGUF files for llama.cpp with an Ollama Modelfile, each checked against the merged model; with step 9, "
        "also TensorRT where there is a GPU, else an ONNX Runtime optimized model. Records the engines really built.",
    11: "Pack the adapter, models and evidence (config, data and model digests, metrics, privacy budget) with a "
        "manifest of per-file digests.",
    12: "Sign the manifest (Ed25519 + ML-DSA-65), verify, and gate promotion by a policy.",
}
EXTRA_SECTIONS = {4: ("privacy",), 6: ("tracking",), 12: ("policy",)}
EXTRA_NOTES = {
    "privacy": "DP-SGD (Opacus) on the adapter weights; the base stays frozen. The unit of privacy is one training "
               "example (one row of the training split): a person with several rows is protected only as far as "
               "their rows together. Each example's gradient is clipped to the per-example clip norm, so step 6's "
               "gradient clipping (training.max_grad_norm) does not apply. Batches are Poisson-sampled around "
               "per-device batch x accumulation. Methods: lora, rslora, dora; refused with sequence packing, "
               "gradient compression (step 7), gradient checkpointing and fp16. The training loss shown while "
               "training is computed on the private rows and is not itself private.",
}


def stage(number: int):
    return STAGES[number - 1]


def is_available(number: int) -> bool:
    return stage(number).run is not None


def step_file(number: int) -> Path:
    return next(PAGES.glob(f"{number:02d}_*.py"))


def step_title(number: int) -> str:
    return f"{number}. {stage(number).title}"


def step_sections(number: int) -> tuple[str, ...]:
    return (stage(number).section, *EXTRA_SECTIONS.get(number, ()))


def step_state(number: int, config: dict, problems, last_status: dict | None) -> tuple[str, str]:
    """(state, what the last run did) of a step: configured, needs attention, off or not available."""
    sections = step_sections(number)
    if any(p.field.split(".")[0] in sections for p in problems):
        state = "needs attention"
    elif not is_available(number):
        state = "not available yet"
    elif not config[stage(number).section]["enabled"]:
        state = "off"
    else:
        state = "configured"
    last = ""
    if last_status:
        last = (last_status.get("stages", {}).get(stage(number).name) or {}).get("state", "")
    finished = (last_status or {}).get("state") in ("completed", "failed", "cancelled", "interrupted")
    return state, {"completed": "done", "pending": "not reached" if finished else ""}.get(last, last)


def step_header(number: int) -> None:
    st.title(step_title(number))
    st.write(WHAT_IT_DOES[number])


def step_form(number: int, targets=None) -> None:
    """The step's settings (disabled, clearly labelled, if the engine cannot run it yet)."""
    available = is_available(number)
    if not available:
        st.info("Not available yet in this version of PEFT Studio: a run cannot turn it on.")
        return
    render_section(stage(number).section, targets=targets)
    for extra in EXTRA_SECTIONS.get(number, ()):
        st.subheader(extra.capitalize())
        if extra in UNAVAILABLE_FEATURES:
            st.caption(f"{UNAVAILABLE_FEATURES[extra].capitalize()} is not available in this version yet.")
            continue
        if extra in EXTRA_NOTES:
            st.caption(EXTRA_NOTES[extra])
        render_section(extra)


def step_page(number: int, targets=None) -> None:
    """Header and settings: the top of a step's page."""
    step_header(number)
    step_form(number, targets=targets)


def step_nav(number: int) -> None:
    """Back / Next at the foot of a step's page."""
    st.divider()
    back, _, forward = st.columns([1, 2, 1])
    if number == 1:
        back.page_link(str(HOME_PAGE), label="← Back: Home")
    else:
        back.page_link(str(step_file(number - 1)), label=f"← Back: {step_title(number - 1)}")
    if number < len(STAGES):
        forward.page_link(str(step_file(number + 1)), label=f"Next: {step_title(number + 1)} →")
    else:
        forward.page_link(str(PAGES / "runs.py"), label="Next: Runs →")


def preview_button(label: str, key: str, spinner: str, compute, help: str | None = None) -> dict | None:
    """A button that runs `compute(config)` on the session's valid config; the result is kept per session."""
    from app.session import validated_config
    from studio_core.errors import StudioError

    if st.button(label, key=key, help=help):
        config = validated_config()
        if config is None:
            st.error("Fix the settings marked on the step pages first (the sidebar lists them).")
        else:
            with st.spinner(spinner):
                try:
                    st.session_state[f"{key}:result"] = compute(config)
                except StudioError as e:
                    st.error(str(e))
                    if "data.columns" in str(e):
                        st.info("In the studio: open \"Map your columns\" above and write your column's name in "
                                "the field's box, e.g. `question` for instruction and `answer` for output.")
    return st.session_state.get(f"{key}:result")
