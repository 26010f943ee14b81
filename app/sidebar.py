"""The sidebar on every page: the run's name and mode, Start (blocked while a setting is wrong), the studio's
active run and queue, import / export of the config and the equivalent CLI command."""

from __future__ import annotations

import json

import streamlit as st

from app import activity
from app.access import signing_secrets
from app.forms import draw_field
from app.monitor import start_run
from app.session import RUN_KEY, cli_command, config_data, problems, replace_config, validated_config
from app.steps import step_file
from studio_core.config import RunConfig
from studio_core.errors import StudioError
from studio_core.runs import migrate_config

IMPORT_KEY = "sidebar:import"


def render_sidebar() -> None:
    with st.sidebar:
        st.header("This run")
        draw_field("name", RunConfig.model_fields["name"])
        draw_field("simulate", RunConfig.model_fields["simulate"])
        _start_button()
        _studio_activity()
        _import_export(config_data())


def _start_button() -> None:
    found = problems()
    if found:
        st.error(f"Start is blocked: {len(found)} setting(s) to fix.\n\n"
                 + "\n".join(f"- `{p.field}`: {p.message}" for p in found))
    secrets = signing_secrets(None if found else validated_config())  # a shared studio asks for the passphrase
    if st.button("Start", type="primary", disabled=bool(found) or secrets is None, key="sidebar:start",
                 width="stretch", help="Queue this config as a run and follow it on 6. Training Exec."):
        try:
            start_run(validated_config(), secrets=secrets)
        except StudioError as e:
            st.error(str(e))
            return
        st.switch_page(str(step_file(6)))


@st.fragment(run_every=2.0)
def _studio_activity() -> None:
    """The studio's active run and queue (every browser sees the same) and this session's last run."""
    active = activity.active_run()
    if active is not None:
        status = active.read_status()
        running = [n for n, s in status.get("stages", {}).items() if s.get("state") == "running"]
        st.markdown(f"**Running now**: `{active.run_id}`" + (f" ({running[0].replace('_', ' ')})" if running else ""))
    queue = activity.queued_ids()
    if queue:
        st.markdown("**Queued**: " + ", ".join(f"`{r}`" for r in queue))
    mine = st.session_state.get(RUN_KEY)
    if mine and (active is None or mine != active.run_id):
        st.markdown(f"**Your last run**: `{mine}`: {activity.run_state(mine)}")
    if active is None and not queue and not mine:
        st.caption("Nothing running.")


def _load_import() -> None:
    uploaded = st.session_state.get(IMPORT_KEY)
    if uploaded is None:
        return
    try:
        replace_config(migrate_config(json.loads(uploaded.getvalue())))  # a run's config.json imports too
        st.session_state["sidebar:import-result"] = ("success", f"Loaded {uploaded.name}.")
    except (StudioError, ValueError) as e:
        st.session_state["sidebar:import-result"] = ("error", f"{uploaded.name}: {e}")


def _import_export(data: dict) -> None:
    with st.expander("Config file and CLI"):
        st.download_button("Export config JSON", json.dumps(data, indent=2), file_name=f"{data['name']}.json",
                           mime="application/json", key="sidebar:export")
        st.file_uploader("Import config JSON", type=["json"], key=IMPORT_KEY, on_change=_load_import,
                         help="Replaces every setting (the run name included) with the file's.")
        result = st.session_state.get("sidebar:import-result")
        if result:
            getattr(st, result[0])(result[1])
        st.caption("The same run from the command line:")
        st.code(cli_command(data), language="bash")
