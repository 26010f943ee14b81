"""Step 1, Data Resolve: the data section, an upload, and a preview of what the engine will train on."""

import streamlit as st

from app.charts import histogram_chart
from app.previews import preview_data
from app.session import config_data
from app.steps import preview_button, step_page
from studio_core.errors import StudioError
from studio_core.runs import studio_home
from studio_core.uploads import sanitise_filename, save_upload

step_page(1)

upload = st.file_uploader("Upload a data file", type=["jsonl", "json", "csv", "parquet"], key="data:upload")
if upload is not None and st.button("Use this file", key="data:use-upload"):
    try:
        path = save_upload(studio_home(), upload.name, upload.getvalue())
        config_data()["data"]["path"] = str(path)
        st.session_state.pop("field:data.path", None)
        wanted = sanitise_filename(upload.name)
        renamed = f" ({wanted} was taken)" if path.name != wanted else ""
        st.success(f"Saved as {path}{renamed}; data.path now points at it.")
    except StudioError as e:
        st.error(str(e))

st.subheader("Preview")
report = preview_button("Resolve and preview the data", "data:preview",
                        "Validating every row and tokenizing with the model's chat template...", preview_data)
if report:
    source = report["sources"][0]
    st.write(f"Schema **{source['row_schema']}**, {source['rows_valid']} valid rows, {source['rows_bad']} bad; "
             f"{report['rows']['train']} train / {report['rows']['val']} validation after removing "
             f"{report['duplicates_removed']} duplicates. Digest `{report['sha256'][:16]}`.")
    if source["bad_rows"]:
        st.dataframe(source["bad_rows"], hide_index=True)
    for row in report["preview"]:
        with st.container(border=True):
            for message in row:
                st.markdown(f"**{message['role']}**: {message['content']}")
    st.plotly_chart(histogram_chart(report["tokens"]["train"]["histogram"], "Token lengths (train)"))
