"""What the studio is doing, read from disk so every browser session sees the same: the active run, the queue,
the session's last run, and the newest output of each step. Start and Cancel go through the job runner."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import streamlit as st

from app.session import RUN_KEY, browser_session
from studio_core import jobs
from studio_core.config import RunConfig
from studio_core.errors import StudioError
from studio_core.runs import RunDir, RunStore


def submit(config: RunConfig, resume: str | None = None, secrets: dict[str, str] | None = None) -> str:
    """Queue a run (or resume one) for this browser session; it becomes the session's current run. `secrets` go to
    the run's process only (a signing passphrase in a shared studio)."""
    extra = {"secrets": secrets} if secrets else {}
    job = jobs.JOBS.submit(config, resume=resume, requested_by=browser_session(), **extra)
    st.session_state[RUN_KEY] = job.run_id
    return job.run_id


def cancel(run_id: str) -> None:
    """Cancel a run; its events record which browser session asked."""
    try:
        jobs.JOBS.cancel(run_id, requested_by=browser_session())
    except StudioError as e:  # it finished in the meantime: nothing to cancel
        st.toast(str(e))


def active_run() -> RunDir | None:
    """The run the studio is running now, whoever started it (read from disk: every browser sees the same)."""
    return jobs.active_run()


def queued_ids() -> list[str]:
    """Runs waiting in the studio's queue, next first."""
    return [run.run_id for run in jobs.queued_runs()]


def run_state(run_id: str) -> str:
    """queued, running, completed, failed, cancelled, interrupted; `gone` when its dir was deleted."""
    run = _get(run_id)
    return run.read_status()["state"] if run else "gone"


def _get(run_id: str) -> RunDir | None:
    try:
        return RunStore().get(run_id)
    except StudioError:
        return None


def current_run() -> RunDir | None:
    """This session's run, else the newest run in the home (a reload or a teammate sees the same)."""
    run_id = st.session_state.get(RUN_KEY)
    run = _get(run_id) if run_id else None
    if run is None:
        runs = RunStore().list()
        run = runs[0] if runs else None
    return run


def latest_artifact(relative: str) -> tuple[RunDir, Path] | None:
    """The newest `artifacts/<relative>` in the studio home, whichever run (and browser) wrote it."""
    for run in RunStore().list():
        path = run.artifacts / relative
        if path.exists():
            return run, path
    return None


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def delete_run(run_id: str) -> None:
    """Remove a run's directory; a queued or running run is refused (cancel it first)."""
    import shutil

    if run_state(run_id) in ("queued", "running"):
        raise StudioError(f"run {run_id} is {run_state(run_id)}; cancel it before deleting it")
    run = _get(run_id)
    if run is not None:
        shutil.rmtree(run.path)
