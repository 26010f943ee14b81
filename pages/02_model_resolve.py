"""Step 2, Model Resolve: the base model reference, the models on this machine, the Hugging Face Hub (search,
details, download, "use this model"), what the reference resolves to, and the last run's model record."""

import streamlit as st

from app import registry, results
from app.previews import inspect_model
from app.steps import preview_button, step_nav, step_page
from studio_core.connectors.hub import LIBRARIES, TASKS

step_page(2)
st.caption("`embedded:smollm2-135m-instruct` ships with the studio; a local folder needs config.json and "
           "*.safetensors; `hf:<org>/<name>` needs network access or the Hub cache; `tiny-random:llama` is a 2-layer "
           "random model for trying the studio in seconds.")
if "model:used" in st.session_state:
    st.success(f"The base model (model.ref) is now `{st.session_state.pop('model:used')}`.")

st.subheader("Models on this machine")
local = registry.local_choices()
if local:
    mine, use = st.columns([4, 1], vertical_alignment="bottom")
    label = mine.selectbox("Folders under the studio's roots and models in the Hugging Face caches", list(local),
                           key="model:local")
    if use.button("Use it", key="model:use-local"):
        registry.use_model(local[label])
        st.rerun()
else:
    st.caption("None yet: a folder with config.json and *.safetensors under the studio's roots, or a model "
               "downloaded below, appears here.")

st.subheader("Find a model on the Hugging Face Hub")
query, task, library, sort = st.columns([3, 2, 2, 1])
text = query.text_input("Search the Hub", key="model:query", placeholder="e.g. SmolLM2 (empty: the task's most downloaded)")
chosen_task = task.selectbox("Task", TASKS, key="model:task")
chosen_library = library.selectbox("Library", ("any", *LIBRARIES), key="model:library")
order = sort.radio("Sort by", ("downloads", "likes"), key="model:sort")
answer = registry.search(text, chosen_task, None if chosen_library == "any" else chosen_library, order)
picked = None
if answer is not None:
    if answer.offline:
        st.warning(f"{answer.offline}: these results were cached earlier.")
    st.caption(("Most downloaded for this task" if not text.strip() else f"{len(answer.data)} models")
               + (" (from the cache in the studio home)" if answer.from_cache else ""))
    st.dataframe(registry.result_rows(answer.data), hide_index=True, key="model:results")
    picked = st.selectbox("Details of", [m["id"] for m in answer.data], index=None, key="model:picked",
                          placeholder="choose a model from the results")

if picked:
    st.markdown(f"**{picked}**")
    with st.spinner("Asking the Hub for its details and estimating its memory..."):
        details = registry.details(picked)
    if details is not None:
        st.table(registry.details_rows(details))
        if not details.usable:
            st.error("Not usable by the studio: " + "; ".join(details.not_usable))
        else:
            use, pull, _ = st.columns([1, 1, 3])
            if use.button("Use this model", key="model:use-hub", type="primary"):
                registry.use_model(f"hf:{picked}")
                st.rerun()
            if pull.button("Download", key="model:pull", help="Safetensors, config and tokenizer files only, "
                                                              "into the studio's model cache."):
                registry.start_pull(picked)
        registry.pull_progress(picked)

st.subheader("Model card for these settings")
info = preview_button("Resolve the model", "model:inspect",
                      "Resolving (the embedded model is converted once, about 20 s)...", inspect_model)
if info:
    results.model_card(info["record"], info["parameters"], info["default_targets"])
    st.dataframe([{"module type": k, "names": ", ".join(v)} for k, v in info["modules"].items()], hide_index=True)
results.from_last_run("model/model.json", "Model record of the last run", lambda r, run: results.model_card(r),
                      "No run has resolved a model yet.")
step_nav(2)
