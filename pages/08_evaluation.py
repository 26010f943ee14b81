"""Step 8, Evaluation: the last run's results (base against tuned, and its privacy budget), then its settings."""

from app import results
import streamlit as st

from app.steps import step_form, step_header, step_nav

step_header(8)
results.from_last_run("eval/metrics.json", "Results of the last run", results.evaluation_and_privacy,
                      "No run has been evaluated yet: results appear here when a run finishes step 8.")
st.subheader("Evaluation settings")
step_form(8)
step_nav(8)
