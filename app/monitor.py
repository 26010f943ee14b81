"""A run's live view: state, progress with ETA, loss / learning-rate / throughput charts, warnings, and the
Cancel / Resume controls. Reads the run dir (the source of truth) and the job registry; refreshes itself."""

from __future__ import annotations

import streamlit as st

from studio_core.errors import StudioError

from app.charts import line_chart, loss_chart
from studio_core.config import validate_config
from studio_core.jobs import JOBS, LOG_FILE, queue_position
from studio_core.runs import RunStore


def render_run(run_id: str, key: str) -> None:
    """The live monitor of `run_id`; `key` keeps widget keys unique per page."""
    @st.fragment(run_every=1.0)
    def live() -> None:
        _render(run_id, key)

    live()


def _render(run_id: str, key: str) -> None:
    try:
        run = RunStore().get(run_id)
        status, metrics, events = run.read_status(), run.metrics(), run.events()
    except (OSError, ValueError, StudioError) as e:  # shown, never "starting..." forever
        st.error(f"Run {run_id} cannot be read: {e}")
        return
    if status["state"] == "queued":
        st.info(f"Run {run_id} is queued: place {queue_position(run_id)} (one run at a time on this machine).")
        _controls(run, status, key)
        return
    _header(run_id, status)
    _progress(events)
    for warning in [e for e in events if e["type"] == "warning"]:
        st.warning(warning["message"])
    if any("loss" in m or "val_loss" in m for m in metrics):
        st.plotly_chart(loss_chart({run_id: metrics}), key=f"{key}-loss")
        left, right = st.columns(2)
        left.plotly_chart(line_chart(metrics, "lr", "Learning rate"), key=f"{key}-lr")
        right.plotly_chart(line_chart(metrics, "tokens_per_s", "Tokens / s"), key=f"{key}-tps")
    _controls(run, status, key)


def _header(run_id: str, status: dict) -> None:
    state = status["state"]
    sim = " (simulation)" if status.get("simulated") else ""
    st.subheader(f"{run_id}{sim}: {state}")
    stages = status.get("stages", {})
    done = [name for name, s in stages.items() if s.get("state") == "completed"]
    st.caption(f"steps done: {', '.join(done) or 'none yet'}")
    if status.get("error"):
        (st.warning if state == "cancelled" else st.error)(status["error"])


def _progress(events: list[dict]) -> None:
    progress = [e for e in events if e["type"] == "progress"]
    if not progress:
        return
    last = progress[-1]
    eta = f", ETA {last['eta_s']:.0f} s" if last.get("eta_s") is not None else ""
    st.progress(last["step"] / last["max_steps"],
                text=f"step {last['step']}/{last['max_steps']}, elapsed {last['elapsed_s']:.0f} s{eta}, "
                     f"loss {last['loss']:.4f}")


def _controls(run, status: dict, key: str) -> None:
    state = status["state"]
    cancel_help = "Stops at the next step boundary, keeping a checkpoint to resume from."
    if state in ("queued", "running") and st.button("Cancel", key=f"{key}-cancel", help=cancel_help):
        JOBS.cancel(run.run_id)
    if state in ("interrupted", "cancelled", "failed") and st.button("Resume", key=f"{key}-resume"):
        JOBS.submit(validate_config(run.config_data()), resume=run.run_id)
        st.rerun()
    log = run.path / LOG_FILE
    if log.is_file() and state in ("failed", "interrupted", "running"):
        with st.expander("Job log (the run process's output)", expanded=state != "running"):
            st.code(log.read_text(encoding="utf-8", errors="replace")[-6000:] or "(empty)")
