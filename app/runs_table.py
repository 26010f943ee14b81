"""One row per run for the Runs page: name, state, start (browser's local time), duration, losses, task metric,
failure reason; and the final metrics row that Compare shows."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import streamlit as st

from app.activity import read_json
from studio_core.runs import RunDir, format_bytes


def _local(stamp: str | None) -> datetime | None:
    if not stamp:
        return None
    when = datetime.fromisoformat(stamp)
    try:
        return when.astimezone(ZoneInfo(st.context.timezone)) if st.context.timezone else when.astimezone()
    except (KeyError, ValueError):
        return when.astimezone()


def _duration(status: dict) -> str:
    start, end = status.get("started_at"), status.get("finished_at")
    if not start:
        return ""
    seconds = ((datetime.fromisoformat(end) if end else datetime.now().astimezone())
               - datetime.fromisoformat(start)).total_seconds()
    return f"{seconds // 60:.0f} min {seconds % 60:.0f} s" if seconds >= 60 else f"{seconds:.0f} s"


def run_row(run: RunDir) -> dict:
    status = run.read_status()
    metrics = run.metrics()
    train = [m["loss"] for m in metrics if m.get("loss") is not None]
    val = [m["val_loss"] for m in metrics if m.get("val_loss") is not None]
    report = read_json(run.artifacts / "eval" / "metrics.json") or {}
    name = run.config_data().get("name", "") if (run.path / "config.json").is_file() else ""
    started = _local(status.get("started_at"))
    return {"name": name, "state": status["state"] + (" (simulation)" if status.get("simulated") else ""),
            "started": started.strftime("%Y-%m-%d %H:%M:%S") if started else "", "duration": _duration(status),
            "train loss": round(train[-1], 4) if train else None, "validation loss": round(val[-1], 4) if val else None,
            "task metric": _task(report), "failure": (status.get("error") or "")[:160]
            if status["state"] == "failed" else "", "disk": format_bytes(run.disk_bytes()), "run": run.run_id}


def _task(report: dict) -> str:
    if not report:
        return ""
    return f"{report['task_metric'].replace('_', ' ')} {report['tuned']['task']['value']:.2f}"


def metrics_row(run: RunDir) -> dict:
    report = read_json(run.artifacts / "eval" / "metrics.json") or {}
    tuned, base = report.get("tuned", {}), report.get("base", {})
    return {"run": run.run_id, "base val loss": base.get("val_loss"), "tuned val loss": tuned.get("val_loss"),
            "task metric": report.get("task_metric"), "base": base.get("task", {}).get("value"),
            "tuned": tuned.get("task", {}).get("value")}
