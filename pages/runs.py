"""Runs: every run in the studio home, read from disk, wherever it was started; watch, compare, inspect."""

import json

import streamlit as st

from app.charts import loss_chart
from app.monitor import render_run
from studio_core.runs import RunStore

store = RunStore()
st.title("Runs")
st.caption(f"Studio home: `{store.home}`")
runs = store.list()
rows = []
for run in runs:
    status = run.read_status()
    done = sum(1 for s in status.get("stages", {}).values() if s.get("state") == "completed")
    rows.append({"run": run.run_id, "state": status["state"], "simulated": bool(status.get("simulated")),
                 "steps done": done, "started": status.get("started_at")})
st.subheader(f"Runs ({len(rows)})")
if not rows:
    st.info("No runs yet.")
    st.stop()
st.dataframe(rows, hide_index=True)

chosen = st.selectbox("Watch a run", [r["run"] for r in rows], key="runs:watch")
render_run(chosen, key="runs")
run = store.get(chosen)
with st.expander("Artifacts"):
    files = sorted(p.relative_to(run.path).as_posix() for p in run.artifacts.rglob("*") if p.is_file())
    st.write("\n".join(f"- `{f}`" for f in files) or "none yet")
samples = run.artifacts / "eval" / "samples.jsonl"
if samples.is_file():
    st.subheader("Base vs tuned")
    for line in samples.read_text().splitlines():
        sample = json.loads(line)
        st.markdown(f"**Prompt**: {sample['prompt'][-1]['content']}")
        left, right = st.columns(2)
        left.text_area("base", sample["base"], disabled=True, key=f"runs:base:{hash(line)}")
        right.text_area("tuned", sample["tuned"], disabled=True, key=f"runs:tuned:{hash(line)}")

st.subheader("Compare")
compared = st.multiselect("Runs to compare", [r["run"] for r in rows], key="runs:compare")
if compared:
    st.plotly_chart(loss_chart({r: store.get(r).metrics() for r in compared}), key="runs:compare-chart")
    table = []
    for run_id in compared:
        path = store.get(run_id).artifacts / "eval" / "metrics.json"
        report = json.loads(path.read_text()) if path.is_file() else {}
        tuned, base = report.get("tuned", {}), report.get("base", {})
        table.append({"run": run_id, "base val loss": base.get("val_loss"), "tuned val loss": tuned.get("val_loss"),
                      "task metric": report.get("task_metric"), "base": base.get("task", {}).get("value"),
                      "tuned": tuned.get("task", {}).get("value")})
    st.dataframe(table, hide_index=True)
