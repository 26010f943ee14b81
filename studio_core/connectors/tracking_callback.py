"""The Trainer callback feeding a run's `trackers.TrackingSession` (kept apart: it needs transformers, and the
studio side of a job imports the workflow, hence `trackers`, without loading torch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from studio_core.connectors.trackers import TrackingSession, metric_values, timestamp_ms


class TrackingCallback(TrainerCallback):
    """Queues each new metrics.jsonl line (written by the studio's callback, which runs first) and, at each
    evaluation, a CPU copy of the trainable weights."""

    def __init__(self, session: TrackingSession, metrics_file: Path, histograms: bool):
        self.session, self.metrics_file, self.histograms = session, metrics_file, histograms
        self.offset = metrics_file.stat().st_size if metrics_file.exists() else 0  # earlier lines: tracked before

    def on_log(self, args, state, control, **kwargs):
        self._send_new_lines()
        return control

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        if self.histograms and model is not None:
            self.session.submit("log_weights", state.global_step, trainable_weights(model))
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self._send_new_lines()
        return control

    def _send_new_lines(self) -> None:
        if not self.metrics_file.exists():
            return
        with self.metrics_file.open("rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line being written is read next time
        self.offset += len(complete)
        for raw in complete.splitlines():
            line = json.loads(raw)
            values = metric_values(line)
            if values and "step" in line:
                self.session.submit("log_metrics", int(line["step"]), values, timestamp_ms(line))


def trainable_weights(model) -> dict[str, Any]:
    """The adapter's trainable parameters as float32 numpy copies (not views: training goes on while the tracker
    thread draws them), named by their module path."""
    return {name.removeprefix("base_model.model."): p.detach().float().cpu().numpy().copy()
            for name, p in model.named_parameters() if p.requires_grad}
