"""Step 1, Data Resolve: an upload, the data settings, a preview of what the engine will train on, the last run's
data report."""

import streamlit as st

from app import results
from app.previews import preview_data
from app.session import set_value
from app.steps import preview_button, step_header, step_form, step_nav
from studio_core.connectors.local import LocalData, studio_roots
from studio_core.errors import StudioError
from studio_core.runs import format_bytes, studio_home
from studio_core.uploads import sanitise_filename, save_upload

UPLOAD = "data:upload"


def _save_upload() -> None:
    upload = st.session_state.get(UPLOAD)
    if upload is None:
        return
    try:
        path = save_upload(studio_home(), upload.name, upload.getvalue())
        set_value("data.path", str(path))
        set_value("data.file_format", "auto")
        wanted = sanitise_filename(upload.name)
        renamed = f" ({wanted} was taken)" if path.name != wanted else ""
        st.session_state["data:upload-result"] = ("success", f"Saved as `{path}`{renamed}: the training data file "
                                                  "below now points at it.")
    except StudioError as e:
        st.session_state["data:upload-result"] = ("error", str(e))


step_header(1)
st.file_uploader("Upload your data file (JSONL, JSON, CSV or Parquet)", type=["jsonl", "json", "csv", "parquet"],
                 key=UPLOAD, on_change=_save_upload,
                 help="Saved in the studio home's uploads folder; the training data file (data.path) then points at it.")
if "data:upload-result" in st.session_state:
    kind, message = st.session_state["data:upload-result"]
    getattr(st, kind)(message)
stored = {f"{e.path}  ({e.kind}, {format_bytes(e.size_bytes)})": e.path
          for e in LocalData(studio_roots(studio_home())).list_data()}
if stored:
    pick, use = st.columns([4, 1], vertical_alignment="bottom")
    label = pick.selectbox("Or pick data already on this machine (under the studio's roots)", list(stored),
                           key="data:local")
    if use.button("Use it", key="data:use-local"):
        set_value("data.path", stored[label])
        set_value("data.file_format", "auto")
        st.rerun()
step_form(1)

st.subheader("Preview for these settings")
report = preview_button("Check the data", "data:preview",
                        "Validating every row and tokenizing with the model's chat template...", preview_data,
                        help="Runs step 1 exactly as a run does (no run is started) and shows its report.")
if report:
    results.data_report(report, key="preview")
    st.markdown("**The first rows as the model will see them**")
    results.conversations(report["preview"])
results.from_last_run("data/report.json", "Data report of the last run",
                      lambda r, run: results.data_report(r, key="last"), "No run has resolved data yet.")
step_nav(1)
