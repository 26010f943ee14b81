"""The tracking connector contract: where a run's params, metrics and artifacts are also sent.

A tracker's methods are called from one background thread (`trackers.TrackingSession`), never from the
training loop, so a slow store does not slow training; any exception disables that tracker after one warning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class Tracker(Protocol):
    name: str

    def start(self, run_id: str, params: dict[str, str], run_dir: Path) -> str:
        """Open (or, for a resumed studio run, reopen) the tracker's run; returns where it went, for the events."""
        ...

    def log_metrics(self, step: int, values: dict[str, float], timestamp_ms: int) -> None:
        """One metrics.jsonl line's numeric values at `step`."""
        ...

    def log_weights(self, step: int, weights: dict[str, Any]) -> None:
        """Adapter weights by parameter name (numpy arrays), for trackers that draw distributions."""
        ...

    def log_artifact(self, path: Path, name: str) -> None:
        """A file or folder a stage produced (adapter, evaluation report, package)."""
        ...

    def finish(self, state: str) -> None:
        """Close the tracker's run with the studio run's final state."""
        ...
