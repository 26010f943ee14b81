"""Runs: every run in the studio home, read from disk, wherever it was started; watch, compare, download, delete."""

import streamlit as st

from app import activity
from app.archives import available, zip_folder
from app.charts import loss_chart
from app.monitor import render_run
from app.runs_table import metrics_row, run_row
from studio_core.errors import StudioError
from studio_core.runs import RunStore

store = RunStore()
st.title("Runs")
st.caption(f"Studio home: `{store.home}`. Every run started here, from the CLI or by a teammate, refreshed every "
           "few seconds.")


@st.fragment(run_every=3.0)
def _table() -> None:
    rows = [run_row(run) for run in store.list()]
    st.subheader(f"Runs ({len(rows)})")
    if rows:
        st.dataframe(rows, hide_index=True, width="stretch")
    else:
        st.info("No runs yet.")


_table()
ids = [run.run_id for run in store.list()]
if ids:
    st.subheader("One run")
    chosen = st.selectbox("Run", ids, key="runs:watch")
    run = store.get(chosen)
    folders = available(run.artifacts)
    if folders:
        cols = st.columns(len(folders))
        for column, (label, folder) in zip(cols, folders.items(), strict=True):
            column.download_button(f"Download the {label} (.zip)", lambda folder=folder: zip_folder(folder),
                                   file_name=f"{chosen}-{folder.name}.zip", mime="application/zip",
                                   key=f"runs:download:{folder.name}")
    asking = f"runs:confirm-delete:{chosen}"
    if not st.session_state.get(asking):
        if st.button("Delete this run", key="runs:delete"):
            st.session_state[asking] = True
            st.rerun()
    else:
        st.warning(f"Delete {chosen} and every file in it (adapter, checkpoints, reports)? This cannot be undone.")
        yes, no = st.columns(2)
        if yes.button("Yes, delete it", key="runs:delete-yes", type="primary"):
            try:
                activity.delete_run(chosen)
                st.session_state.pop(asking)
                st.rerun()
            except StudioError as e:
                st.error(str(e))
        if no.button("No, keep it", key="runs:delete-no"):
            st.session_state.pop(asking)
            st.rerun()

    render_run(chosen, key="runs")

    st.subheader("Compare")
    compared = st.multiselect("Runs to compare", ids, key="runs:compare")
    if compared:
        st.plotly_chart(loss_chart({r: store.get(r).metrics() for r in compared}), key="runs:compare-chart")
        st.dataframe([metrics_row(store.get(r)) for r in compared], hide_index=True, width="stretch")
