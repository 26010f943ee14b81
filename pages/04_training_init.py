"""Step 4, Training Init: a use-case preset with its reasoning, fit to this machine, the method's settings, and
the PEFT model the last run built."""

import streamlit as st

from app import results
from app.previews import fit_for, module_names, preset_for
from app.session import config_data, replace_config, validated_config
from app.steps import step_header, step_form, step_nav
from studio_core.errors import StudioError
from studio_core.runs import studio_home
from studio_core.train.adapters import method_table
from studio_core.train.presets import PRESETS

RESULT = "preset:result"  # (what was applied, the method section it produced): shown while the method still is that


def _apply(compute, what: str) -> None:
    config = validated_config()
    if config is None:
        st.session_state[RESULT] = {"error": "Fix the settings marked on the step pages first.", "method": None}
        return
    try:
        result = compute(config)
    except StudioError as e:
        st.session_state[RESULT] = {"error": str(e), "method": None}
        return
    replace_config(result["config"])
    st.session_state[RESULT] = {**result, "what": what, "method": config_data()["method"]}


def _preset() -> None:
    preset = st.session_state["preset:choice"]
    _apply(lambda c: preset_for(c, preset), f"preset {PRESETS[preset].title}")


def _fit() -> None:
    _apply(fit_for, "fit to this machine")


step_header(4)
st.subheader("Use-case preset")
st.selectbox("Preset", list(PRESETS), format_func=lambda p: f"{PRESETS[p].title}: {PRESETS[p].purpose}",
             key="preset:choice")
st.caption("Sets the method with all its parameters and every training setting; the rank is recommended from your "
           "data (step 1) and the model's width (step 2). Your data, model, seed, precision and backend are kept.")
left, right = st.columns(2)
left.button("Apply preset", key="preset:apply", on_click=_preset, help="Reads the data to recommend a rank.")
right.button("Fit to this machine", key="fit:apply", on_click=_fit,
             help="Estimates training memory and, where it exceeds the budget, turns on gradient checkpointing, then "
                  "trades batch size for accumulation, then moves LoRA to QLoRA.")
result = st.session_state.get(RESULT)
if result and result.get("error"):
    st.error(result["error"])
elif result and result["method"] == config_data()["method"]:  # a later method change makes it stale: not shown
    method = result["config"]["method"]
    rank = f" with r={method['r']}" if "r" in method else ""
    if "fits" in result:
        (st.success if result["fits"] else st.error)(f"Fit to this machine: {'fits' if result['fits'] else 'does not fit yet'}"
                                                     f" ({method['name']}{rank}). Why:")
    else:
        st.success(f"Applied {result['what']}: {method['name']}{rank}. Why:")
    st.markdown("\n".join(f"- {reason}" for reason in result["reasons"]))

st.subheader("Method")
model = config_data()["model"]
names = module_names(model["ref"], model.get("revision"), str(studio_home()))
if isinstance(names, str):
    st.caption(f"The model's module names could not be read ({names}); type the names instead.")
else:
    st.caption(f"`{model['ref']}` has these linear layers: {', '.join(names['linear'])}. Its defaults: "
               f"{', '.join(names['default'])}.")
step_form(4, targets=None if isinstance(names, str) else names["linear"])
with st.expander("Every method"):
    st.dataframe(method_table(), hide_index=True)
results.from_last_run("training_init.json", "PEFT model of the last run", results.peft_summary,
                      "No run has built a PEFT model yet.")
step_nav(4)
