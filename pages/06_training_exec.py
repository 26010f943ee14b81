"""Step 6, Training Exec: the studio's run live (whoever started it), then the step's settings."""

import streamlit as st

from app import activity
from app.monitor import ACTIVE, render_run
from app.session import RUN_KEY, config_data
from app.steps import step_form, step_header, step_nav
from studio_core.config import DEMO_RECIPE_NOTE, data_recipe
from studio_core.train.lifecycle import SIMULATION_STEPS


def _shown():
    """The active run (any browser's), else this session's last run, else the newest."""
    return activity.active_run() or activity.current_run()


@st.fragment(run_every=2.0)
def _watch(shown_id: str | None, state: str | None) -> None:
    """While nothing runs: redraw the page when a run starts (from any browser) or the one shown changes."""
    now = _shown()
    if (now.run_id if now else None) != shown_id or (now and activity.run_state(now.run_id) != state):
        st.rerun()


step_header(6)
shown, mine = _shown(), st.session_state.get(RUN_KEY)
if mine and (shown is None or mine != shown.run_id) and activity.run_state(mine) == "queued":
    st.info(f"Your run `{mine}` is queued" + (" behind this one." if shown else "."))
if shown is None:
    st.info("No run yet: press Start in the sidebar (or run the demo from Home); it appears here live.")
elif activity.run_state(shown.run_id) not in ACTIVE:
    st.caption("Nothing is running now; this is the latest run.")
if shown is not None:
    render_run(shown.run_id, key="training")
queue = activity.queued_ids()
if queue:
    st.caption("Queued: " + ", ".join(f"`{r}`" for r in queue))
if shown is None or activity.run_state(shown.run_id) not in ACTIVE:
    _watch(shown.run_id if shown else None, activity.run_state(shown.run_id) if shown else None)
st.divider()
st.subheader("Training settings")
if config_data()["simulate"]:
    caps = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in SIMULATION_STEPS.items())
    st.caption(f"Simulation is on: a run caps these at {caps} (on a tiny model and a 64-row slice).")
data = config_data()
recipe = data_recipe(data["data"]["path"], data["model"]["ref"], data["privacy"]["enabled"]).get("training", {})
kept = [k for k, v in recipe.items() if data["training"].get(k) == v]
if kept:
    private = (" Privacy is on, so the recipe leaves its label loss out: it compares rows with each other, which "
               "per-example clipping cannot bound." if data["privacy"]["enabled"] else "")
    st.caption(f"{', '.join(f'`training.{k}`' for k in kept)} as in {DEMO_RECIPE_NOTE}{private}")
step_form(6)
step_nav(6)
