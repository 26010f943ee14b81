"""The sidebar on every page: the session's run, its job, Start, import/export and the equivalent CLI."""

from __future__ import annotations

import json

import streamlit as st

from app.access import signing_secrets
from app.session import RUN_KEY, cli_command, config_data, problems, replace_config, validated_config
from studio_core.errors import StudioError
from studio_core.jobs import JOBS, queue_position
from studio_core.runs import RunStore


def render_sidebar() -> None:
    data = config_data()
    with st.sidebar:
        st.header("Current run")
        data["name"] = st.text_input("run name", value=data["name"], key="field:name")
        data["simulate"] = st.toggle("simulation", value=data["simulate"], key="field:simulate",
                                     help="Validate the real data and model, then run on a tiny model of the same "
                                          "architecture and a 64-row slice: proves the pipeline in seconds.")
        _start_button()
        _current_job()
        _import_export(data)


def _start_button() -> None:
    found = problems()
    if found:
        st.error("Start is blocked:\n" + "\n".join(f"- `{p.field}`: {p.message}" for p in found))
    secrets = signing_secrets(None if found else validated_config())  # a shared studio asks for the passphrase
    if st.button("Start", type="primary", disabled=bool(found) or secrets is None, key="sidebar:start"):
        job = JOBS.submit(validated_config(), **({"secrets": secrets} if secrets else {}))
        st.session_state[RUN_KEY] = job.run_id


@st.fragment(run_every=2.0)
def _current_job() -> None:
    run_id = st.session_state.get(RUN_KEY)
    if not run_id:
        return
    try:
        status = RunStore().get(run_id).read_status()
    except StudioError as e:
        st.error(str(e))
        return
    position = queue_position(run_id)
    st.write(f"**{run_id}**: " + (f"queued (place {position})" if position else status["state"]))
    done = [n for n, s in status["stages"].items() if s.get("state") == "completed"]
    st.caption("steps done: " + (", ".join(done) or "none yet"))


def _import_export(data: dict) -> None:
    with st.expander("Config"):
        st.download_button("Export config JSON", json.dumps(data, indent=2), file_name=f"{data['name']}.json",
                           mime="application/json", key="sidebar:export")
        uploaded = st.file_uploader("Import config JSON", type=["json"], key="sidebar:import")
        if uploaded is not None and st.button("Load it", key="sidebar:load"):
            try:
                replace_config(json.loads(uploaded.getvalue()))
                st.rerun()
            except (StudioError, ValueError) as e:
                st.error(f"{uploaded.name}: {e}")
        st.caption("The same run from the command line:")
        st.code(cli_command(data), language="bash")
