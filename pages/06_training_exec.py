"""Step 6, Training Exec: the studio's run live (whoever started it), then the step's settings."""

import streamlit as st

from app import activity
from app.monitor import render_run
from app.session import RUN_KEY, config_data
from app.steps import step_form, step_header, step_nav
from studio_core.stages import SIMULATION_STEPS


@st.fragment(run_every=1.0)
def _live() -> None:
    """The active run (any browser's), else this session's last run, else the newest; looked up every second."""
    active, mine = activity.active_run(), st.session_state.get(RUN_KEY)
    shown = active or activity.current_run()
    if shown is None and not mine:
        st.info("No run yet: press Start in the sidebar (or run the demo from Home); it appears here live.")
        return
    if mine and (shown is None or mine != shown.run_id) and activity.run_state(mine) == "queued":
        st.info(f"Your run `{mine}` is queued" + (" behind this one." if shown else "."))
    if shown is not None:
        if active is None:
            st.caption("Nothing is running now; this is the latest run.")
        render_run(shown.run_id, key="training", live=False)
    queue = activity.queued_ids()
    if queue:
        st.caption("Queued: " + ", ".join(f"`{r}`" for r in queue))


step_header(6)
_live()
st.divider()
st.subheader("Training settings")
if config_data()["simulate"]:
    caps = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in SIMULATION_STEPS.items())
    st.caption(f"Simulation is on: a run caps these at {caps} (on a tiny model and a 64-row slice).")
step_form(6)
step_nav(6)
