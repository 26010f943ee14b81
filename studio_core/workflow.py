"""The twelve stages in wizard order, the context passed between them, and the orchestrator.

`run(config, home)` is the one entry point the CLI and the UI both call. It refuses up front a config that
enables a stage this version cannot run yet (nothing is silently skipped), creates the run dir, runs the
enabled stages in order, records each stage's state and timing, and stops at the first failure with the
error recorded. A disabled stage is recorded as `skipped`, with the config key that disabled it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio_core.config import RunConfig
from studio_core.errors import CancelledError, ConfigError, InputError, Problem, StudioError
from studio_core.runs import (
    RunDir,
    RunStore,
    atomic_write_json,
    mark_running_again,
    model_cache_dir,
    new_run_id,
    utc_now,
)

EventSink = Callable[[dict[str, Any]], None]


@dataclass
class RunContext:
    """What stages share: the config, the run dir, and each stage's outputs for the next ones."""

    config: RunConfig
    run: RunDir
    home: Path
    cancel: threading.Event
    on_event: EventSink | None = None
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def simulated(self) -> bool:
        return self.config.simulate

    @property
    def model_cache(self) -> Path:
        return model_cache_dir(self.home)

    def emit(self, kind: str, message: str = "", **data: Any) -> None:
        """Record an event in the run dir and pass it to the live listener (CLI progress, UI registry)."""
        self.run.event(kind, message, **data)
        if self.on_event is not None:
            self.on_event({"type": kind, "message": message, "run_id": self.run.run_id, **data})

    def artifact_dir(self, name: str) -> Path:
        path = self.run.artifacts / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def write_artifact(self, name: str, data: Any) -> Path:
        path = self.run.artifacts / name
        atomic_write_json(path, data)
        return path


@dataclass(frozen=True)
class Stage:
    number: int
    name: str
    title: str
    section: str  # the config section whose `enabled` flag turns the stage on
    run: Callable[[RunContext], None] | None  # None: registered, not available in this version yet


def _stages() -> list[Stage]:
    from studio_core.stages import (
        compile_engine,
        data_resolve,
        evaluation,
        evidence_signing,
        export_onnx,
        model_resolve,
        preflight_check,
        tgsp_packing,
        training_exec,
        training_init,
    )

    return [
        Stage(1, "data_resolve", "Data Resolve", "data", data_resolve),
        Stage(2, "model_resolve", "Model Resolve", "model", model_resolve),
        Stage(3, "preflight", "Pre-flight Check", "preflight", preflight_check),
        Stage(4, "training_init", "Training Init", "method", training_init),
        Stage(5, "pruning_init", "Pruning Aware Init", "pruning", None),
        Stage(6, "training_exec", "Training Exec", "training", training_exec),
        Stage(7, "dynamic_sparsification", "Dynamic Sparsification", "comm", None),
        Stage(8, "evaluation", "Evaluation", "evaluation", evaluation),
        Stage(9, "export_onnx", "Export ONNX", "export", export_onnx),
        Stage(10, "compile", "Compile", "compile", compile_engine),
        Stage(11, "tgsp_packing", "TGSP Packing", "package", tgsp_packing),
        Stage(12, "evidence_signing", "Evidence Signing", "signing", evidence_signing),
    ]


STAGES: list[Stage] = _stages()
# Features that live inside a stage rather than being one, not available yet either.
UNAVAILABLE_FEATURES = {"privacy": "differential privacy"}


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
    cancel: threading.Event | None = None, on_event: EventSink | None = None, run_id: str | None = None,
) -> RunDir:
    """Run every enabled stage of `config` in a new run dir (or resume run `resume`); returns the run dir.

    `run_id` names the new run (the UI's job queue assigns it before the run starts); by default one is made.
    """
    check_runnable(config)
    store = RunStore(home)
    if resume:
        run_dir = _take_over(store, resume)
    else:
        run_id = run_id or new_run_id(config.name, config.simulate)
        run_dir = store.create(config.model_dump_json(indent=2) + "\n", run_id, [s.name for s in STAGES],
                               config.simulate)
    ctx = RunContext(config, run_dir, store.home, cancel or threading.Event(), on_event)
    ctx.emit("run_started", "simulation run" if config.simulate else "run", resumed=bool(resume),
             simulated=config.simulate)
    try:
        for stage in STAGES:
            _run_stage(ctx, stage)
    except CancelledError:
        _finish(ctx, "cancelled", "cancelled at a stage boundary")
        raise
    except StageFailed as e:
        _finish(ctx, "failed", str(e))
        raise
    except BaseException as e:  # KeyboardInterrupt, SystemExit: not completed, resumable
        _finish(ctx, "interrupted", f"{type(e).__name__}: {e}")
        raise
    _finish(ctx, "completed")
    return run_dir


def _take_over(store: RunStore, run_id: str) -> RunDir:
    run_dir = store.get(run_id)
    state = run_dir.read_status()["state"]
    if state == "completed":
        raise InputError(f"run {run_id} is already completed; start a new run instead")
    if state == "running":
        raise InputError(f"run {run_id} is still running in another process; wait for it or cancel it")
    mark_running_again(run_dir)
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
        _set_stage(ctx, stage, state="failed", seconds=seconds, error=f"{type(e).__name__}: {e}")
        ctx.emit("stage_failed", str(e), stage=stage.name, number=stage.number, seconds=seconds)
        raise StageFailed(ctx.run, stage, e) from e
    seconds = round(time.perf_counter() - start, 3)
    _set_stage(ctx, stage, state="completed", seconds=seconds, finished_at=utc_now())
    ctx.emit("stage_completed", stage.title, stage=stage.name, number=stage.number, seconds=seconds)


def _finish(ctx: RunContext, state: str, error: str | None = None) -> None:
    status = ctx.run.read_status()
    status.update(state=state, finished_at=utc_now(), error=error)
    ctx.run.write_status(status)
    ctx.emit(f"run_{state}", error or "")
