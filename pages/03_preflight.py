"""Step 3, Pre-flight Check: the go/no-go checklist for the session's config, kept with the runs."""

import streamlit as st

from app import activity, results
from app.monitor import ACTIVE, start_run
from app.session import RUN_KEY, validated_config
from app.steps import step_nav, step_page

CHECK_KEY = "preflight:run_id"
LATER = ("method", "training", "evaluation", "export", "compile", "package", "signing", "policy")


def _run_checks() -> None:
    config = validated_config()
    if config is None:
        st.session_state["preflight:error"] = "Fix the settings marked on the step pages first (the sidebar lists them)."
        return
    checks_only = {s: getattr(config, s).model_copy(update={"enabled": False}) for s in LATER}
    mine = st.session_state.get(RUN_KEY)
    run_id = start_run(config.model_copy(update={"name": f"{config.name}-preflight", **checks_only}))
    st.session_state[CHECK_KEY] = run_id
    if mine:  # the checks do not replace the session's training run
        st.session_state[RUN_KEY] = mine
    else:
        st.session_state.pop(RUN_KEY, None)


step_page(3)
st.button("Run the pre-flight check", key="preflight:run", type="primary", on_click=_run_checks,
          help="Runs steps 1-3 only, as a run of their own (listed on Runs), so the report is kept.")
if "preflight:error" in st.session_state:
    st.error(st.session_state.pop("preflight:error"))
checking = st.session_state.get(CHECK_KEY)


@st.fragment(run_every=1.0)
def _wait(run_id: str) -> None:
    state = activity.run_state(run_id)
    if state not in ACTIVE:
        st.rerun()  # done: draw the report below, once
    st.info(f"Checking ({state}): resolving the data and the model, estimating memory, timing a micro-run...")


if checking and activity.run_state(checking) in ACTIVE:
    _wait(checking)
else:
    results.from_last_run("preflight.json", "Pre-flight report", lambda r, run: results.preflight_checklist(r),
                          "No pre-flight report yet: run the check above (or start a run).")
    if checking and activity.run_state(checking) == "failed":
        run = activity._get(checking)  # noqa: SLF001
        error = run.read_status().get("error") if run else None
        if error and "no-go" not in error:
            st.error(error)
step_nav(3)
