"""The twelve stages in wizard order and the orchestrator (what they share is `studio_core.context`).

`run(config, home)` is the one entry point the CLI and the UI both call. It refuses up front a config that
enables a stage this version cannot run yet (nothing is silently skipped), creates the run dir, runs the
enabled stages in order, records each stage's state and timing, and stops at the first failure with the
error recorded. A disabled stage is recorded as `skipped`, with the config key that disabled it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio_core import stages
from studio_core.config import RunConfig
from studio_core.connectors import trackers
from studio_core.context import CancelSignal, EventSink, Flag, RunContext
from studio_core.errors import CancelledError, ConfigError, InputError, Problem, RunInterrupted, StudioError
from studio_core.runs import RunDir, RunStore, config_file_text, mark_running_again, new_run_id, utc_now


@dataclass(frozen=True)
class Stage:
    number: int
    name: str
    title: str
    section: str  # the config section whose `enabled` flag turns the stage on
    run: Callable[[RunContext], None] | None  # None: registered, not available in this version yet


STAGES: list[Stage] = [
    Stage(1, "data_resolve", "Data Resolve", "data", stages.data_resolve),
    Stage(2, "model_resolve", "Model Resolve", "model", stages.model_resolve),
    Stage(3, "preflight", "Pre-flight Check", "preflight", stages.preflight_check),
    Stage(4, "training_init", "Training Init", "method", stages.training_init),
    Stage(5, "pruning_init", "Pruning Aware Init", "pruning", stages.pruning_init),
    Stage(6, "training_exec", "Training Exec", "training", stages.training_exec),
    Stage(7, "dynamic_sparsification", "Dynamic Sparsification", "comm", stages.dynamic_sparsification),
    Stage(8, "evaluation", "Evaluation", "evaluation", stages.evaluation),
    Stage(9, "export_onnx", "Export ONNX", "export", stages.export_onnx),
    Stage(10, "compile", "Compile", "compile", stages.compile_engine),
    Stage(11, "tgsp_packing", "TGSP Packing", "package", stages.tgsp_packing),
    Stage(12, "evidence_signing", "Evidence Signing", "signing", stages.evidence_signing),
]
# Features that live inside a stage rather than being one, not available yet either.
UNAVAILABLE_FEATURES: dict[str, str] = {}


def is_enabled(stage: Stage, config: RunConfig) -> bool:
    return getattr(config, stage.section).enabled


def unavailable_problems(config: RunConfig) -> list[Problem]:
    """Enabled stages and features this version cannot run: refused before anything is written."""
    problems = [
        Problem(f"{s.section}.enabled", f"step {s.number}, {s.title}, is not available yet in this version "
                                        f"of PEFT Studio; set {s.section}.enabled=false")
        for s in STAGES if s.run is None and is_enabled(s, config)
    ]
    for section, what in UNAVAILABLE_FEATURES.items():
        if getattr(config, section).enabled:
            problems.append(Problem(f"{section}.enabled", f"{what} is not available yet in this version of "
                                                          f"PEFT Studio; set {section}.enabled=false"))
    return problems


def check_runnable(config: RunConfig) -> None:
    problems = unavailable_problems(config)
    if problems:
        raise ConfigError(problems)


class StageFailed(StudioError):
    """A stage raised; carries the run dir and the stage so callers can point at both."""

    def __init__(self, run: RunDir, stage: Stage, cause: BaseException):
        self.run, self.stage, self.cause = run, stage, cause
        super().__init__(f"step {stage.number} ({stage.title}) failed: {cause}")

    @property
    def is_input_error(self) -> bool:
        return isinstance(self.cause, InputError)


def run(
    config: RunConfig, home: str | Path | None = None, *, resume: str | None = None,
    cancel: Flag | None = None, on_event: EventSink | None = None, run_id: str | None = None,
) -> RunDir:
    """Run every enabled stage of `config` in a new run dir (or resume run `resume`); returns the run dir.

    `run_id` names the new run; where a run dir of that id is `queued` (the studio's queue made it), this
    process takes it over. The run stops at its next step or stage boundary when `cancel` is set or a cancel
    request file appears in its run dir (`studio_core.context.request_cancel`).
    """
    check_runnable(config)
    store = RunStore(home)
    if resume:
        run_dir = _take_over(store, resume)
    elif run_id and (store.root / run_id).is_dir():
        run_dir = _take_over(store, run_id, queued_only=True)
    else:
        run_id = run_id or new_run_id(config.name, config.simulate)
        run_dir = store.create(config_file_text(config.model_dump_json()), run_id, [s.name for s in STAGES],
                               config.simulate)
    ctx = RunContext(config, run_dir, store.home, CancelSignal(run_dir.path, cancel), on_event)
    ctx.emit("run_started", "simulation run" if config.simulate else "run", resumed=bool(resume),
             simulated=config.simulate)
    done_before = _completed_stages(run_dir) if resume else set()
    try:
        for stage in STAGES:
            if stage.name in done_before and _kept_on_resume(ctx, stage, done_before):
                ctx.emit("stage_kept", f"{stage.title}: completed before the run stopped; its artifacts are kept",
                         stage=stage.name, number=stage.number)
                continue
            _run_stage(ctx, stage)
    except CancelledError:
        _finish(ctx, "cancelled", "cancelled at a stage boundary")
        raise
    except StageFailed as e:
        _finish(ctx, "interrupted" if isinstance(e.cause, RunInterrupted) else "failed", str(e))
        raise
    except BaseException as e:  # KeyboardInterrupt, SystemExit: not completed, resumable
        _finish(ctx, "interrupted", f"{type(e).__name__}: {e}")
        raise
    _finish(ctx, "completed")
    return run_dir


def _completed_stages(run_dir: RunDir) -> set[str]:
    return {name for name, s in run_dir.read_status().get("stages", {}).items() if s.get("state") == "completed"}


def _kept_on_resume(ctx: RunContext, stage: Stage, done_before: set[str]) -> bool:
    """A stage that completed before a resume is not run again when what later stages read of it is on disk.

    Training Init is the exception while Training Exec has not completed: the two share the live PEFT model.
    """
    if stage.name == "training_init":
        return "training_exec" in done_before
    if stage.name == "data_resolve":  # run dirs from before tokens were stored re-run it
        return (ctx.run.artifacts / "data" / "train.tokens.jsonl").is_file()
    return True


def _take_over(store: RunStore, run_id: str, queued_only: bool = False) -> RunDir:
    run_dir = store.get(run_id)
    state = run_dir.read_status()["state"]
    if queued_only and state != "queued":
        raise InputError(f"run {run_id} already exists ({state}); give a new run id, or resume it")
    if state == "completed":
        raise InputError(f"run {run_id} is already completed; start a new run instead")
    if state == "running":
        raise InputError(f"run {run_id} is still running in another process; wait for it or cancel it")
    mark_running_again(run_dir, resumed=not queued_only)
    return run_dir


def _set_stage(ctx: RunContext, stage: Stage, **fields: Any) -> None:
    status = ctx.run.read_status()
    status["state"] = "running"
    status["stages"].setdefault(stage.name, {}).update(fields)
    ctx.run.write_status(status)


def _run_stage(ctx: RunContext, stage: Stage) -> None:
    if not is_enabled(stage, ctx.config):
        _set_stage(ctx, stage, state="skipped", reason=f"{stage.section}.enabled=false")
        return
    if ctx.cancel.is_set():
        _set_stage(ctx, stage, state="cancelled")
        raise CancelledError(f"cancelled before step {stage.number}")
    assert stage.run is not None, "check_runnable refuses unavailable stages"
    _set_stage(ctx, stage, state="running", started_at=utc_now(), error=None)
    ctx.emit("stage_started", stage.title, stage=stage.name, number=stage.number)
    start = time.perf_counter()
    try:
        stage.run(ctx)
    except CancelledError:
        _set_stage(ctx, stage, state="cancelled", seconds=round(time.perf_counter() - start, 3))
        raise
    except Exception as e:
        seconds = round(time.perf_counter() - start, 3)
        state = "interrupted" if isinstance(e, RunInterrupted) else "failed"  # resumable, not the config's fault
        _set_stage(ctx, stage, state=state, seconds=seconds, error=f"{type(e).__name__}: {e}")
        ctx.emit("stage_failed", str(e), stage=stage.name, number=stage.number, seconds=seconds)
        raise StageFailed(ctx.run, stage, e) from e
    seconds = round(time.perf_counter() - start, 3)
    _set_stage(ctx, stage, state="completed", seconds=seconds, finished_at=utc_now())
    ctx.emit("stage_completed", stage.title, stage=stage.name, number=stage.number, seconds=seconds)
    trackers.stage_completed(ctx, stage.name)  # the adapter, evaluation report and package to the trackers


def _finish(ctx: RunContext, state: str, error: str | None = None) -> None:
    status = ctx.run.read_status()
    status.update(state=state, finished_at=utc_now(), error=error)
    ctx.run.write_status(status)
    trackers.close(ctx, state)
    ctx.emit(f"run_{state}", error or "")
