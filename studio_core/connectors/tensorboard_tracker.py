"""TensorBoard: event files in `<run dir>/tensorboard/`: every metric as a scalar, and a histogram of each adapter
weight (per layer and module) at every evaluation, the weight distributions people watch during fine-tuning.

Open it with `tensorboard --logdir <run dir>/tensorboard`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

FOLDER = "tensorboard"


class TensorboardTracker:
    name = "tensorboard"

    def __init__(self) -> None:
        self.writer: Any = None

    def start(self, run_id: str, params: dict[str, str], run_dir: Path) -> str:
        from torch.utils.tensorboard import SummaryWriter

        log_dir = run_dir / FOLDER
        self.writer = SummaryWriter(log_dir=str(log_dir))
        self.writer.add_text("config", "\n".join(f"    {k} = {v}" for k, v in params.items()))
        return str(log_dir)

    def log_metrics(self, step: int, values: dict[str, float], timestamp_ms: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, global_step=step, walltime=timestamp_ms / 1000)

    def log_weights(self, step: int, weights: dict[str, Any]) -> None:
        for name, array in weights.items():
            self.writer.add_histogram(f"adapter/{name}", array, global_step=step)
        self.writer.flush()

    def log_artifact(self, path: Path, name: str) -> None:
        return None  # TensorBoard keeps no files; MLflow does

    def finish(self, state: str) -> None:
        self.writer.close()
