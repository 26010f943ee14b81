"""Step 6, Training Exec: its settings, and the live view of the session's current run."""

import streamlit as st

from app.monitor import render_run
from app.session import RUN_KEY
from app.steps import step_page

step_page(6)
st.divider()
run_id = st.session_state.get(RUN_KEY)
if run_id:
    render_run(run_id, key="training")
else:
    st.info("Start a run from the sidebar; its loss curves appear here as it trains.")
