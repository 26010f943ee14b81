"""Weights & Biases: offline by default, so the run's files land in `<run dir>/wandb/` and nothing leaves the
machine (`wandb sync <run dir>/wandb/offline-run-*` uploads them later). Online only with
`tracking.wandb_mode=online` and a key in the environment (WANDB_API_KEY or `wandb login`); the key is never
written to the run dir, the config or the package.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


class WandbTracker:
    name = "wandb"

    def __init__(self, project: str, mode: str):
        self.project, self.mode = project, mode
        self.run: Any = None

    def start(self, run_id: str, params: dict[str, str], run_dir: Path) -> str:
        import wandb

        mode = self.mode
        if mode == "online" and not (os.environ.get("WANDB_API_KEY") or _logged_in()):
            raise RuntimeError("tracking.wandb_mode=online needs a W&B key: set WANDB_API_KEY in the environment "
                               "the studio runs in (or `wandb login`); the run stays untracked by W&B")
        settings = wandb.Settings(console="off", x_disable_stats=True, silent=True)
        self.run = wandb.init(project=self.project, name=run_id, id=_wandb_id(run_id), dir=str(run_dir),
                              mode=mode, config=params, resume="allow", settings=settings,
                              reinit="create_new")
        return f"{mode}: {self.run.dir}"

    def log_metrics(self, step: int, values: dict[str, float], timestamp_ms: int) -> None:
        self.run.log(values, step=step)

    def log_weights(self, step: int, weights: dict[str, Any]) -> None:
        return None  # histograms go to TensorBoard; W&B keeps the scalars

    def log_artifact(self, path: Path, name: str) -> None:
        return None  # artifacts go to MLflow

    def finish(self, state: str) -> None:
        self.run.finish(exit_code=0 if state == "completed" else 1)


def _wandb_id(run_id: str) -> str:
    """W&B run ids allow letters, digits, '-' and '_'; the studio's ids already are."""
    return run_id.replace(".", "-")[:128]


def _logged_in() -> bool:
    netrc = Path.home() / ".netrc"
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="replace")
