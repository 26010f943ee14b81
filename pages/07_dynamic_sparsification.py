"""Step 7, Dynamic Sparsification: gradient compression (method, k/d) across the training processes, then the last
run's bytes per step and the shipped update's size against validation loss."""

import streamlit as st

from app import results
from app.forms import draw_field
from app.steps import step_form, step_header, step_nav
from studio_core.config import TrainingConfig

step_header(7)
step_form(7)
st.subheader("Training processes")
draw_field("training.nproc", TrainingConfig.model_fields["nproc"])
st.caption("Gradient compression needs 2 or more processes (they exchange gradients every step); with one, only the "
           "shipped update is compressed. On a CPU, processes share its cores.")
results.from_last_run("comm/report.json", "Compression in the last run", results.sparsification,
                      "No run has compressed anything yet: enable this step and start a run.")
step_nav(7)
