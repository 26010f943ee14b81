"""Home: what the studio does, the twelve steps with their state, and two quick starts."""

import streamlit as st

from app import activity
from app.monitor import start_run
from app.session import config_data, problems, replace_config, validated_config
from app.steps import STAGES, step_file, step_state, step_title
from studio_core.config import DEMO_DATA_REF, switch_recipe
from studio_core.errors import StudioError

st.title("PEFT Studio")
st.markdown("Fine-tune a language model on your own examples on this machine: pick the data and a base model, "
            "train a small adapter (LoRA and 13 other methods), and compare it with the base model.\n\n"
            "Twelve steps, each a page on the left; the defaults work offline on a CPU. Start runs them in order.")


def _demo() -> None:
    data = switch_recipe({**config_data(), "simulate": True}, "data.path", DEMO_DATA_REF)  # with its recipe
    try:
        replace_config(data)
        config = validated_config()
        if config is None:
            raise StudioError("the settings have problems: " + "; ".join(f"{p.field}: {p.message}" for p in problems()))
        start_run(config)
        st.session_state["home:go"] = str(step_file(6))
    except StudioError as e:
        st.session_state["home:error"] = str(e)


def _my_data() -> None:
    data = {**config_data(), "simulate": False}
    replace_config(data)
    st.session_state["home:go"] = str(step_file(1))


left, right = st.columns(2)
with left.container(border=True):
    st.subheader("Try the demo in simulation")
    st.write("The built-in legal-audit dataset and the base model from step 2, run end to end on a tiny random "
             "model of the same architecture: proves the whole pipeline in a minute or two. Its figures say nothing "
             "about the real model.")
    st.button("Run the demo simulation", type="primary", key="home:demo", on_click=_demo)
with right.container(border=True):
    st.subheader("Fine-tune on my data")
    st.write("Upload a JSONL, JSON, CSV or Parquet file on step 1, check what the studio reads from it, then walk "
             "the steps with Next. A preset on step 4 fills in every training setting.")
    st.button("Start with my data", key="home:mine", on_click=_my_data)
if "home:error" in st.session_state:
    st.error(st.session_state.pop("home:error"))
if "home:go" in st.session_state:
    st.switch_page(st.session_state.pop("home:go"))

st.subheader("The steps")
last = activity.current_run()
last_status = last.read_status() if last else None
found, data = problems(), config_data()
rows = []
for s in STAGES:
    state, done = step_state(s.number, data, found, last_status)
    rows.append({"step": step_title(s.number), "now": state, "in the last run": done or "-"})
st.dataframe(rows, hide_index=True, width="stretch", height=35 * (len(rows) + 1) + 3)  # all twelve, no scrolling
if last is not None:
    st.caption(f"Last run: `{last.run_id}` ({last_status['state']}). Every run is on the Runs page.")
st.page_link(str(step_file(1)), label="Begin: 1. Data Resolve →")
