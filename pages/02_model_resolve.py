"""Step 2, Model Resolve: the base model reference and what it resolves to."""

import streamlit as st

from app.previews import inspect_model
from app.session import validated_config
from app.steps import step_page
from studio_core.errors import StudioError

step_page(2)
st.caption("`embedded:smollm2-135m-instruct` ships with the studio; a local folder needs config.json and "
           "*.safetensors; `hf:<org>/<name>` needs network access or the Hub cache.")
if st.button("Resolve the model", key="model:inspect"):
    config = validated_config()
    if config is None:
        st.error("Fix the settings marked on the step pages first.")
    else:
        with st.spinner("Resolving (the embedded model is converted once, about 20 s)..."):
            try:
                st.session_state["model:info"] = inspect_model(config)
            except StudioError as e:
                st.error(str(e))
info = st.session_state.get("model:info")
if info:
    record = info["record"]
    st.write(f"**{record['ref']}**: {record['model_type']} ({', '.join(record['architectures'])}), "
             f"{info['parameters']:,} parameters, from `{record['path']}`")
    st.write("Default target modules: " + ", ".join(f"`{m}`" for m in info["default_targets"]))
    st.dataframe([{"module type": k, "names": ", ".join(v)} for k, v in info["modules"].items()], hide_index=True)
    st.json({"weights": record["weight_sha256"], "tokenizer": record["tokenizer_sha256"]}, expanded=False)
