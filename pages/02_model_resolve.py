"""Step 2, Model Resolve: the base model reference and what it resolves to."""

import streamlit as st

from app.previews import inspect_model
from app.steps import preview_button, step_page

step_page(2)
st.caption("`embedded:smollm2-135m-instruct` ships with the studio; a local folder needs config.json and "
           "*.safetensors; `hf:<org>/<name>` needs network access or the Hub cache.")
info = preview_button("Resolve the model", "model:inspect",
                      "Resolving (the embedded model is converted once, about 20 s)...", inspect_model)
if info:
    record = info["record"]
    st.write(f"**{record['ref']}**: {record['model_type']} ({', '.join(record['architectures'])}), "
             f"{info['parameters']:,} parameters, from `{record['path']}`")
    st.write("Default target modules: " + ", ".join(f"`{m}`" for m in info["default_targets"]))
    st.dataframe([{"module type": k, "names": ", ".join(v)} for k, v in info["modules"].items()], hide_index=True)
    st.json({"weights": record["weight_sha256"], "tokenizer": record["tokenizer_sha256"]}, expanded=False)
