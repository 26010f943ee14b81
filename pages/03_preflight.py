"""Step 3, Pre-flight Check: the go/no-go report, run by the engine on the session's config."""

import json

import streamlit as st

from app.monitor import render_run
from app.session import validated_config
from app.steps import step_page
from studio_core.jobs import JOBS
from studio_core.runs import RunStore

step_page(3)
if st.button("Run the pre-flight check", key="preflight:run",
             help="Runs steps 1-3 only, as a run of their own, so the report is kept with the others."):
    config = validated_config()
    if config is None:
        st.error("Fix the settings marked on the step pages first.")
    else:
        checks_only = {s: getattr(config, s).model_copy(update={"enabled": False})
                       for s in ("method", "training", "evaluation")}
        job = JOBS.submit(config.model_copy(update={"name": f"{config.name}-preflight", **checks_only}))
        st.session_state["preflight:run_id"] = job.run_id
run_id = st.session_state.get("preflight:run_id")
if run_id:
    render_run(run_id, key="preflight")
    report_path = RunStore().root / run_id / "artifacts" / "preflight.json"
    if report_path.is_file():
        report = json.loads(report_path.read_text())
        (st.success if report["go"] else st.error)("GO" if report["go"] else "NO-GO")
        for error in report["errors"]:
            st.error(error)
        for warning in report["warnings"]:
            st.warning(warning)
        st.json({k: v for k, v in report.items() if k not in ("go", "errors", "warnings")})
