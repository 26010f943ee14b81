"""Step 6, Training Exec: the live view of the session's current run first, then the step's settings."""

import streamlit as st

from app.monitor import render_run
from app.session import RUN_KEY
from app.steps import step_page

run_id = st.session_state.get(RUN_KEY)
if run_id:
    render_run(run_id, key="training")
    st.divider()
step_page(6)
if not run_id:
    st.info("Start a run from the sidebar; its loss curves appear at the top of this page as it trains.")
