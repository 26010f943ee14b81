"""Step 5, Pruning Aware Init: the method, targets and calibration rows; then the last run's 2:4 report."""

import streamlit as st

from app import results
from app.previews import module_names
from app.pruning import pruning_report
from app.session import config_data
from app.steps import step_form, step_header, step_nav
from studio_core.runs import studio_home

step_header(5)
model = config_data()["model"]
names = module_names(model["ref"], model.get("revision"), str(studio_home()))
if not isinstance(names, str):
    st.caption(f"`{model['ref']}` has these linear layers: {', '.join(names['linear'])}; 'auto' prunes every one "
               "inside the decoder blocks. Embeddings, norms and the LM head are never pruned.")
step_form(5, targets=None if isinstance(names, str) else names["linear"])
results.from_last_run("pruning.json", "2:4 sparsity of the last run", pruning_report,
                      "No run has pruned a model yet.")
step_nav(5)
