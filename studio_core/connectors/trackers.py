"""The run's trackers (`tracking.backends`): attached through the trainer seam, fed from one background thread.

`trainer_parts(ctx)` opens a `TrackingSession` for the run (None when tracking is off) and returns the Trainer
callback that feeds it: after the studio's own callback has written a metrics.jsonl line, this one reads the new
lines and queues them, so every tracker sees exactly what metrics.jsonl holds (loss, val_loss, lr, tokens/s and
any fields features add, such as epsilon). At each evaluation it queues a copy of the adapter weights.
`stage_completed` queues a stage's artifacts (adapter, evaluation report, package); `close` finishes the
trackers' runs with the studio run's state, waiting at most `tracking.flush_timeout_s`.

Every tracker call happens in the session's thread: a slow store never slows a training step. A tracker that
raises (store unwritable, package missing, no key) is dropped after one warning event; the run goes on.
"""

from __future__ import annotations

import json
import math
import queue
import threading
from datetime import datetime
from typing import TYPE_CHECKING, Any

from studio_core.catalog import backend_status

if TYPE_CHECKING:
    from studio_core.connectors.tracking import Tracker
    from studio_core.context import RunContext

SESSION = "tracking"  # the key of the run's session in ctx.outputs
NOT_METRICS = ("time", "step")
# Where each stage leaves what the trackers keep as artifacts.
STAGE_ARTIFACTS = {"training_exec": ("adapter", "adapter"), "evaluation": ("eval", "evaluation"),
                   "tgsp_packing": ("package", "package")}


def build_trackers(ctx: RunContext) -> list[Tracker]:
    """The configured trackers whose package is installed; each missing one is one warning event."""
    from studio_core.connectors.mlflow_tracker import MlflowTracker, default_uri
    from studio_core.connectors.tensorboard_tracker import TensorboardTracker
    from studio_core.connectors.wandb_tracker import WandbTracker

    cfg = ctx.config.tracking
    makers = {"mlflow": lambda: MlflowTracker(cfg.mlflow_uri or default_uri(ctx.home), cfg.mlflow_experiment,
                                              ctx.home),
              "tensorboard": TensorboardTracker, "wandb": lambda: WandbTracker(cfg.wandb_project, cfg.wandb_mode)}
    trackers = []
    for name in dict.fromkeys(cfg.backends):
        status = backend_status(name)
        if not status.available:
            ctx.emit("warning", f"tracker {name} is off for this run: {status.reason} ({status.install})",
                     about="tracking", tracker=name)
            continue
        trackers.append(makers[name]())
    return trackers


class TrackingSession:
    """The run's trackers behind one queue and one daemon thread."""

    def __init__(self, ctx: RunContext, trackers: list[Tracker]):
        self.ctx, self.trackers = ctx, list(trackers)
        self.tasks: queue.Queue = queue.Queue()
        self.failed: set[str] = set()
        self.thread = threading.Thread(target=self._work, name="studio-trackers", daemon=True)
        self.thread.start()
        self.submit("start", ctx.run.run_id, flat_params(ctx.config.model_dump(mode="json")), ctx.run.path)

    def submit(self, method: str, *args: Any) -> None:
        self.tasks.put((method, args))

    def _work(self) -> None:
        while True:
            method, args = self.tasks.get()
            if method == "_stop":
                return
            for tracker in [t for t in self.trackers if t.name not in self.failed]:
                try:
                    where = getattr(tracker, method)(*args)
                    if method == "start":
                        self.ctx.emit("tracking", f"tracking with {tracker.name}: {where}", tracker=tracker.name,
                                      where=where)
                except Exception as e:  # noqa: BLE001 - a tracker never fails the run; it warns once and stops
                    self.failed.add(tracker.name)
                    self.ctx.emit("warning", f"tracker {tracker.name} stopped ({method} failed: {type(e).__name__}: "
                                             f"{str(e).splitlines()[0] if str(e) else ''}); the run goes on without "
                                             "it", about="tracking", tracker=tracker.name)

    def close(self, state: str, timeout_s: float) -> None:
        """Finish every tracker's run, waiting at most `timeout_s` for the queue to drain."""
        self.submit("finish", state)
        self.submit("_stop")
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            self.ctx.emit("warning", f"trackers still busy after tracking.flush_timeout_s={timeout_s:g} s; the run "
                                     "ends without waiting for them (their runs may lack the last values)",
                          about="tracking")


def flat_params(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """The resolved config as dotted `key: value` strings (MLflow params hold strings up to 6000 characters)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(flat_params(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = (value if isinstance(value, str) else json.dumps(value))[:6000]
    return out


def metric_values(line: dict[str, Any]) -> dict[str, float]:
    """The finite numeric fields of one metrics.jsonl line (not its time or step)."""
    return {k: float(v) for k, v in line.items() if k not in NOT_METRICS and isinstance(v, (int, float))
            and not isinstance(v, bool) and math.isfinite(v)}


def timestamp_ms(line: dict[str, Any]) -> int:
    return int(datetime.fromisoformat(line["time"]).timestamp() * 1000)


def session(ctx: RunContext) -> TrackingSession | None:
    """The run's tracking session, opened on first use; None when tracking is off or no tracker is installed."""
    if SESSION not in ctx.outputs:
        cfg = ctx.config.tracking
        trackers = build_trackers(ctx) if cfg.enabled else []
        ctx.outputs[SESSION] = TrackingSession(ctx, trackers) if trackers else None
    return ctx.outputs[SESSION]


def trainer_parts(ctx: RunContext):
    """The trainer seam's part for tracking: the callback feeding the run's trackers (None when off)."""
    from studio_core.connectors.tracking_callback import TrackingCallback
    from studio_core.train.trainer import TrainerParts

    tracking = session(ctx)
    if tracking is None:
        return None
    return TrainerParts(callbacks=[TrackingCallback(tracking, ctx.run.path / "metrics.jsonl",
                                                    ctx.config.tracking.histograms)])


def stage_completed(ctx: RunContext, stage: str) -> None:
    """Queue what `stage` left for the trackers to keep (the adapter, the evaluation report, the package)."""
    if stage not in STAGE_ARTIFACTS or not ctx.config.tracking.enabled:
        return
    folder, name = STAGE_ARTIFACTS[stage]
    path = ctx.run.artifacts / folder
    tracking = session(ctx)
    if tracking is not None and path.exists():
        tracking.submit("log_artifact", path, name)


def close(ctx: RunContext, state: str) -> None:
    """Finish the trackers' runs (if this process opened any) with the run's final state."""
    tracking = ctx.outputs.pop(SESSION, None)
    if tracking is not None:
        tracking.close(state, ctx.config.tracking.flush_timeout_s)
