"""Studio home: where runs live, and every run in it, read from disk."""

import streamlit as st

from studio_core.runs import RunStore

store = RunStore()
st.title("PEFT Studio")
st.caption(f"Studio home: `{store.home}`")
st.write("Fine-tune with `peft-studio run` (or `peft-studio run --simulate` for a quick end-to-end check); "
         "the twelve-step wizard is being built on the same engine.")
rows = []
for run in store.list():
    status = run.read_status()
    done = [name for name, s in status.get("stages", {}).items() if s.get("state") == "completed"]
    rows.append({"run": run.run_id, "state": status["state"], "simulated": bool(status.get("simulated")),
                 "steps done": len(done), "started": status.get("started_at")})
st.subheader(f"Runs ({len(rows)})")
if rows:
    st.dataframe(rows, hide_index=True)
else:
    st.info("No runs yet.")
