"""Step 4, Training Init: a use-case preset with its reasoning, the method table, and the method's settings."""

import streamlit as st

from app.previews import fit_for, preset_for
from app.session import replace_config
from app.steps import preview_button, step_page
from studio_core.train.adapters import method_table
from studio_core.train.presets import PRESETS

step_page(4)
st.subheader("Use-case preset")
preset = st.selectbox("preset", list(PRESETS), format_func=lambda p: f"{PRESETS[p].title}: {PRESETS[p].purpose}",
                      key="preset:choice")
st.caption("Sets the method with all its parameters and every training setting; the rank is recommended from your "
           "data (step 1) and the model's width (step 2). Your data, model, seed, precision and backend are kept.")


def _apply(config):
    result = preset_for(config, preset)
    replace_config(result["config"])
    st.session_state["preset:rerun"] = True  # redraw the form above with the preset's values
    return result


applied = preview_button("Apply preset", key="preset:apply", spinner="Reading the data to recommend a rank...",
                         compute=_apply)
if applied:
    st.success(f"Applied {applied['config']['method']['name']} with r={applied['config']['method'].get('r')}. Why:")
    st.markdown("\n".join(f"- {reason}" for reason in applied["reasons"]))
st.subheader("Fit to this machine")
st.caption("Estimates training memory for these settings and, where it exceeds the budget, turns on gradient "
           "checkpointing, then trades batch size for accumulation, then moves LoRA to QLoRA.")


def _fit(config):
    result = fit_for(config)
    replace_config(result["config"])
    st.session_state["preset:rerun"] = True
    return result


fitted = preview_button("Fit to this machine", key="fit:apply", spinner="Estimating memory...", compute=_fit)
if st.session_state.pop("preset:rerun", False):
    st.rerun()
if fitted:
    (st.success if fitted["fits"] else st.error)("Fits." if fitted["fits"] else "Does not fit yet.")
    st.markdown("\n".join(f"- {reason}" for reason in fitted["reasons"]))
with st.expander("Every method"):
    st.dataframe(method_table(), hide_index=True)
