"""Step 2, Model Resolve: the base model reference, what it resolves to, and the last run's model record."""

import streamlit as st

from app import results
from app.previews import inspect_model
from app.steps import preview_button, step_nav, step_page

step_page(2)
st.caption("`embedded:smollm2-135m-instruct` ships with the studio; a local folder needs config.json and "
           "*.safetensors; `hf:<org>/<name>` needs network access or the Hub cache; `tiny-random:llama` is a 2-layer "
           "random model for trying the studio in seconds.")
st.subheader("Model card for these settings")
info = preview_button("Resolve the model", "model:inspect",
                      "Resolving (the embedded model is converted once, about 20 s)...", inspect_model)
if info:
    results.model_card(info["record"], info["parameters"], info["default_targets"])
    st.dataframe([{"module type": k, "names": ", ".join(v)} for k, v in info["modules"].items()], hide_index=True)
results.from_last_run("model/model.json", "Model record of the last run", lambda r, run: results.model_card(r),
                      "No run has resolved a model yet.")
step_nav(2)
