"""A run's live view: its plan, the stage running now, progress with ETA, charts, warnings; on completion the
headline figures and what to do next; on failure the failing stage, its message, the job's log and Resume.
Cancel asks first. Reads the run dir (the source of truth), refreshes itself."""

from __future__ import annotations

import streamlit as st

from app import activity
from app.charts import epsilon_chart, line_chart, loss_chart, resource_chart
from app.session import RUN_KEY, browser_session
from studio_core.config import RunConfig, validate_config
from studio_core.errors import StudioError
from studio_core.workflow import STAGES, is_enabled

STARTED_KEY = "runs_started_here"
ACTIVE = ("queued", "running")


def run_plan(config: RunConfig) -> list[str]:
    """What the run will do, as the engine will do it (simulation caps included)."""
    from studio_core.train.lifecycle import simulation_training

    steps = [f"{s.number} {s.title}" for s in STAGES if is_enabled(s, config)]
    lines = ["Steps: " + ", ".join(steps)]
    if config.training.enabled:
        t = (simulation_training(config) if config.simulate else config).training
        line = (f"Training: {t.max_steps} optimizer steps of {t.per_device_batch_size} x "
                f"{t.gradient_accumulation_steps} examples, validation every {t.eval_steps} steps, a checkpoint every "
                f"{t.save_steps}")
        if t.nproc * t.nnodes > 1:
            line += (f", on {t.nproc * t.nnodes} processes through torchrun ({t.nproc} per machine; each takes "
                     f"{t.per_device_batch_size} examples per forward pass)")
        if config.simulate and t.max_steps != config.training.max_steps:
            line += (f" (simulation caps the {config.training.max_steps} steps set on step 6 at {t.max_steps}, on a "
                     "tiny random model and a 64-row slice)")
        lines.append(line)
    if config.training.enabled and config.training.label_words:
        t = config.training
        line = f"Label loss (weight {t.label_loss_weight:g}) on the words {', '.join(t.label_words)}"
        if t.label_group:
            line += (f", each row compared only with rows of its own group (training.label_group {t.label_group!r}): "
                     f"every pass holds one row of each word from each group it draws")
        else:
            line += ", each row compared with the other rows of its pass"
        lines.append(line)
    if config.evaluation.enabled:
        lines.append(f"Evaluation: base and tuned each answer up to {config.evaluation.task_rows} held-out prompts "
                     f"and score up to {config.evaluation.max_rows} validation rows")
    return lines


STATUS_EVERY_S = 2.0
# Charts redraw less often than the progress line: plotly's redraw is what a watching browser spends its CPU
# on, and on a shared 2-core workstation that CPU comes out of training (bench/studio_overhead.py --browsers 8).
CHARTS_EVERY_S = 6.0


def render_run(run_id: str, key: str, live: bool = True) -> None:
    """The monitor of `run_id`; `key` keeps widget keys unique per page. A queued or running run refreshes
    itself: its state, progress, warnings and controls every STATUS_EVERY_S, its charts every CHARTS_EVERY_S
    (two fragments). Once it ends the page is drawn once more and then holds still (a download needs a page
    that does not redraw under it)."""
    if live and activity.run_state(run_id) in ACTIVE:
        @st.fragment(run_every=STATUS_EVERY_S)
        def status() -> None:
            if activity.run_state(run_id) not in ACTIVE:
                st.rerun()  # the whole page: its outcome, downloads and next steps, drawn once
            shown = _render_status(run_id, key)
            if shown:
                _controls(*shown, key)

        @st.fragment(run_every=CHARTS_EVERY_S)
        def charts() -> None:
            _render_charts(run_id, key)

        status()
        charts()
    else:
        shown = _render_status(run_id, key)
        if shown:
            _render_charts(run_id, key)
            _controls(*shown, key)


def _read(run_id: str):
    """The run and what the monitor shows of it, or None after saying why it cannot be shown."""
    run = activity._get(run_id)  # noqa: SLF001
    if run is None:
        st.info(f"Run {run_id} is no longer in the studio home (it was deleted).")
        return None
    try:
        return run, run.read_status(), run.events(), validate_config(run.config_data())
    except (OSError, ValueError, StudioError) as e:  # shown, never "starting..." forever
        st.error(f"Run {run_id} cannot be read: {e}")
        return None


def _render_status(run_id: str, key: str):
    """Header, plan, progress or outcome, warnings; returns (run, state) for the controls, or None when the run
    cannot be read (the reason is shown)."""
    read = _read(run_id)
    if read is None:
        return None
    run, status, events, config = read
    state = status["state"]
    sim = " (simulation)" if status.get("simulated") else ""
    st.subheader(f"{run_id}{sim}: {state}")
    by = (status.get("queued") or {}).get("requested_by")
    if by:
        st.caption("Started from this browser." if by == browser_session() else f"Started from another browser ({by}).")
    if state == "queued":
        queue = activity.queued_ids()
        place = f"place {queue.index(run_id) + 1} in the queue" if run_id in queue else "about to start"
        st.info(f"Queued: {place} (one run at a time on this machine).")
    if state in ACTIVE:
        with st.expander("The plan", expanded=not (run.path / "metrics.jsonl").exists()):
            st.markdown("\n".join(f"- {line}" for line in run_plan(config)))
        if state == "running":
            _now(status, events)
    else:
        _outcome(run, status, events, key)
    for message in _unique(e["message"] for e in events if e["type"] == "label_loss"):
        st.caption(message[0].upper() + message[1:])  # which rows the label loss found, and how they are grouped
    for warning in _unique(e["message"] for e in events if e["type"] == "warning"):
        st.warning(warning)
    return run, state


def _render_charts(run_id: str, key: str) -> None:
    """Loss (and epsilon under privacy), learning rate, tokens/s, gradient bytes; the process's resources."""
    run = activity._get(run_id)  # noqa: SLF001
    if run is None:
        return
    try:
        status, metrics, config = run.read_status(), run.metrics(), validate_config(run.config_data())
    except (OSError, ValueError, StudioError):
        return  # _render_status said why
    if any("loss" in m or "val_loss" in m for m in metrics):
        if any(m.get("epsilon") is not None for m in metrics):  # private training: the budget beside the loss
            loss, spent = st.columns(2)
            figure = loss_chart({run_id: metrics})
            figure.update_layout(legend={"orientation": "h", "y": -0.25})  # half width: the legend goes below
            loss.plotly_chart(figure, key=f"{key}-loss")
            spent.plotly_chart(epsilon_chart(metrics, config.privacy.target_epsilon), key=f"{key}-epsilon")
        else:
            st.plotly_chart(loss_chart({run_id: metrics}), key=f"{key}-loss")
        left, right = st.columns(2)
        left.plotly_chart(line_chart(metrics, "lr", "Learning rate"), key=f"{key}-lr")
        right.plotly_chart(line_chart(metrics, "tokens_per_s", "Tokens / s"), key=f"{key}-tps")
        if any("comm_bytes" in m for m in metrics):  # step 7's gradient compression
            st.plotly_chart(line_chart(metrics, "comm_bytes", "Gradient bytes sent per step (per process)"),
                            key=f"{key}-comm")
    elif status["state"] in ACTIVE and config.training.enabled:
        st.caption(f"The loss and learning-rate charts appear with the first training step (charts refresh every "
                   f"{CHARTS_EVERY_S:.0f} s, the progress line every {STATUS_EVERY_S:.0f} s).")
    _resources(run, status, key)


def _controls(run, state: str, key: str) -> None:
    """Cancel (asks first) while the run is active; Resume once it stopped without completing."""
    _cancel_control(run.run_id, state, key)
    _resume_control(run, state, key)


def _unique(items) -> list[str]:
    return list(dict.fromkeys(items))


def _now(status: dict, events: list[dict]) -> None:
    """The stage running now, in words, with its progress."""
    running = [s for s in STAGES if (status.get("stages", {}).get(s.name) or {}).get("state") == "running"]
    if not running:
        st.caption("Starting...")
        return
    stage = running[0]
    started = [e for e in events if e["type"] == "stage_started" and e.get("stage") == stage.name]
    progress = [e for e in events if e["type"] == "progress"]
    if stage.name == "training_exec" and progress:
        last = progress[-1]
        eta = f", about {last['eta_s']:.0f} s left" if last.get("eta_s") is not None else ""
        loss = "n/a (empty batch)" if last.get("loss") is None else f"{last['loss']:.4f}"
        spent = f", epsilon {last['epsilon']:.3f} spent" if last.get("epsilon") is not None else ""
        text = (f"Step {stage.number}, {stage.title}: step {last['step']}/{last['max_steps']}, loss "
                f"{loss}{spent}, {last['elapsed_s']:.0f} s so far{eta}")
        st.progress(min(1.0, last["step"] / last["max_steps"]), text=text)
        if last["step"] >= last["max_steps"]:
            st.caption("Training steps done: saving the adapter, checking it reloads, merging it.")
        return
    answered = [e for e in events if e["type"] == "eval_progress"]
    if stage.name == "evaluation" and answered and started and answered[-1]["time"] >= started[-1]["time"]:
        last = answered[-1]
        side = "base model" if last["done"] <= last["total"] // 2 else "tuned model"
        st.progress(min(1.0, last["done"] / max(1, last["total"])),
                    text=f"Step {stage.number}, {stage.title}: {last['done']}/{last['total']} answers ({side} answering "
                         "the held-out prompts; base first, then tuned)")
        return
    doing = {"evaluation": "base and tuned answer the held-out prompts and score the validation rows",
             "preflight": "measuring memory and a micro-run of real training steps",
             "data_resolve": "validating every row and tokenizing", "export_onnx": "exporting and checking parity",
             "compile": "building and timing the engine", "training_init": "building the PEFT model",
             "training_exec": "loading the model and data"}.get(stage.name, "working")
    since = ""
    if started:
        from datetime import datetime, timezone

        seconds = (datetime.now(timezone.utc) - datetime.fromisoformat(started[-1]["time"])).total_seconds()
        since = f" ({seconds:.0f} s so far)"
    st.info(f"Now: step {stage.number}, {stage.title}: {doing}{since}.")


def _resources(run, status: dict, key: str) -> None:
    """The run's process as its supervisor sampled it: CPU % and memory over time, and the peaks."""
    from studio_core.jobs import RESOURCES_FILE
    from studio_core.runs import read_jsonl

    samples = read_jsonl(run.path / RESOURCES_FILE)
    if not samples:
        return
    st.plotly_chart(resource_chart(samples[-600:]), key=f"{key}-resources")
    peaks = status.get("resources") or {}
    parts = [f"peak memory {peaks['peak_rss_mb']:,.0f} MB" if peaks.get("peak_rss_mb") else None,
             f"peak CPU {peaks['peak_cpu_percent']:.0f}%" if peaks.get("peak_cpu_percent") is not None else None,
             f"peak GPU memory {peaks['peak_gpu_memory_mb']:,.0f} MB" if peaks.get("peak_gpu_memory_mb") else None]
    st.caption(", ".join(p for p in parts if p) + " (sampled every 2 s by the studio; 100% = one core)")


def _outcome(run, status: dict, events: list[dict], key: str) -> None:
    state = status["state"]
    if state == "completed":
        _completed(run)
    elif state == "failed":
        failed = [s for s in STAGES if (status["stages"].get(s.name) or {}).get("state") == "failed"]
        error = status.get("error") or "no message recorded"
        if failed:
            error = error.removeprefix(f"step {failed[0].number} ({failed[0].title}) failed: ")
        where = f"Step {failed[0].number}, {failed[0].title}, failed" if failed else "The run failed"
        st.error(f"{where}: {error}")
        st.caption("The message says what to change. Open the run's settings in the wizard, fix them and Start "
                   "again; Resume retries this run as it is, from its last checkpoint (for a failure that was not "
                   "in the settings).")
        if failed and st.button(f"Open its settings on step {failed[0].number}", key=f"{key}-fix", type="primary"):
            from app.session import replace_config
            from app.steps import step_file

            replace_config(run.config_data())
            st.switch_page(str(step_file(failed[0].number)))
        _log(run, events)
    elif state == "cancelled":
        asked = [e for e in events if e["type"] in ("cancel_requested", "run_cancelled") and e.get("requested_by")]
        who = f" (asked by {asked[-1].get('requested_by')})" if asked else ""
        st.info(f"Cancelled{who}. Resume continues from the last checkpoint.")
    elif state == "interrupted":
        why = status.get("error") or "the process running it stopped (the studio was closed or killed)"
        tail = "" if "resume" in why.lower() else " Resume continues from the last checkpoint."  # said once
        st.warning(f"Interrupted: {why.rstrip('.')}.{tail}")
        _log(run, events)


def _completed(run) -> None:
    report = activity.read_json(run.artifacts / "eval" / "metrics.json") or {}
    figures = []
    losses = [m["loss"] for m in run.metrics() if m.get("loss") is not None]
    if losses:
        figures.append(f"final training loss {losses[-1]:.4f}")
    privacy = activity.read_json(run.artifacts / "privacy.json")
    if privacy:
        figures.append(f"epsilon {privacy['epsilon']:.3f} spent (delta {privacy['delta']:.2g})")
    if report:
        b, t = report["base"], report["tuned"]
        figures.append(f"validation loss {b['val_loss']:.4f} → {t['val_loss']:.4f}")
        figures.append(f"{report['task_metric'].replace('_', ' ')} {b['task']['value']:.2f} → {t['task']['value']:.2f}")
    st.success("Completed" + (": " + "; ".join(figures) if figures else "."))
    from app.steps import step_file

    from app.archives import zip_folder

    cols = st.columns(3)
    cols[0].page_link(str(step_file(8)), label="See the results: 8. Evaluation →")
    cols[1].page_link(str(step_file(9)), label="Export it: 9. Export ONNX →")
    if (run.artifacts / "adapter").is_dir():
        cols[2].download_button("Download the adapter (.zip)", lambda: zip_folder(run.artifacts / "adapter"),
                                file_name=f"{run.run_id}-adapter.zip", mime="application/zip",
                                key=f"done-download-{run.run_id}")


def _log(run, events: list[dict]) -> None:
    from studio_core.jobs import LOG_FILE

    log = run.path / LOG_FILE
    with st.expander("The job's log", expanded=True):
        if log.is_file():
            st.code(log.read_text(encoding="utf-8", errors="replace")[-6000:] or "(empty)", language="text")
        else:
            st.code("\n".join(f"{e['time'][11:19]} {e['type']}: {e.get('message', '')}" for e in events[-30:]),
                    language="text")


def _cancel_control(run_id: str, state: str, key: str) -> None:
    if state not in ACTIVE:
        return
    asking = f"{key}:confirm-cancel:{run_id}"
    if not st.session_state.get(asking):
        if st.button("Cancel run", key=f"{key}-cancel", help="Stops at the next step boundary, keeping a checkpoint "
                                                             "to resume from. Asks first."):
            st.session_state[asking] = True
            st.rerun(scope="fragment")
        return
    run = activity._get(run_id)  # noqa: SLF001
    asked_by = (run.read_status().get("queued") or {}).get("requested_by") if run else None
    mine = run_id in st.session_state.get(STARTED_KEY, set()) or asked_by == browser_session()
    who = "" if mine else " It was started from another browser: its owner will see it cancelled."
    st.warning(f"Cancel {run_id}?{who} It stops at the next step boundary and can be resumed.")
    yes, no = st.columns(2)
    if yes.button("Yes, cancel it", key=f"{key}-cancel-yes", type="primary"):
        activity.cancel(run_id)
        st.session_state[asking] = False
        st.rerun(scope="fragment")
    if no.button("No, keep it running", key=f"{key}-cancel-no"):
        st.session_state[asking] = False
        st.rerun(scope="fragment")


def _resume_control(run, state: str, key: str) -> None:
    if state in ("interrupted", "cancelled", "failed") and st.button("Resume", key=f"{key}-resume",
                                                                     type="secondary" if state == "failed" else "primary"):
        run_id = activity.submit(validate_config(run.config_data()), resume=run.run_id)
        st.session_state.setdefault(STARTED_KEY, set()).add(run_id)
        st.rerun()


def start_run(config: RunConfig, secrets: dict[str, str] | None = None) -> str:
    """Start `config` for this browser session and remember it started it."""
    run_id = activity.submit(config, secrets=secrets)
    st.session_state.setdefault(STARTED_KEY, set()).add(run_id)
    st.session_state[RUN_KEY] = run_id
    browser_session()
    return run_id
