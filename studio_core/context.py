"""What the stages of one run share: the config, the run dir, the cancel signal, events and a cache.

`RunContext.outputs` is a cache of what earlier stages built in this process (the resolved model, the
tokenizer, the tokenized data, the PEFT model). A stage reads an earlier stage's result through an accessor
here (`resolved_model`, `tokenizer`, `prepared_data`, `precision`; the tuned model through
`studio_core.train.lifecycle.trained_model`) that falls back to the run dir on disk, so a stage can run in
another process, or after a resume, without the objects the earlier stages left in memory.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from studio_core.config import RunConfig
from studio_core.runs import RunDir, atomic_write_json, model_cache_dir, utc_now

EventSink = Callable[[dict[str, Any]], None]
CANCEL_FILE = "cancel.request"
"""A cancel request for a run, as a file in its run dir: any process (the studio, `peft-studio queue cancel`)
can write it, and the run's own process honours it at its next step or stage boundary."""


class Flag(Protocol):
    def is_set(self) -> bool: ...


class CancelSignal:
    """Set when this process was asked to stop (`set()`, SIGTERM) or a cancel request file is in the run dir."""

    def __init__(self, run_path: Path | None = None, event: Flag | None = None):
        self.run_path = run_path
        self._event = event if event is not None else threading.Event()
        self._local = threading.Event()

    def set(self) -> None:
        self._local.set()

    def is_set(self) -> bool:
        if self._local.is_set() or self._event.is_set():
            return True
        return self.run_path is not None and (self.run_path / CANCEL_FILE).exists()


def request_cancel(run: RunDir, requested_by: str | None = None) -> None:
    """Ask the run's process to stop at its next boundary (a file any process can write)."""
    atomic_write_json(run.path / CANCEL_FILE, {"requested_at": utc_now(), "requested_by": requested_by})


@dataclass
class RunContext:
    """What stages share: the config, the run dir, the cancel signal, and a cache of earlier stages' objects."""

    config: RunConfig
    run: RunDir
    home: Path
    cancel: Flag
    on_event: EventSink | None = None
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def simulated(self) -> bool:
        return self.config.simulate

    @property
    def model_cache(self) -> Path:
        return model_cache_dir(self.home)

    def emit(self, kind: str, message: str = "", **data: Any) -> None:
        """Record an event in the run dir and pass it to the live listener (CLI progress)."""
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

    def read_artifact(self, name: str) -> Any:
        return json.loads((self.run.artifacts / name).read_text(encoding="utf-8"))

    # -- earlier stages' results: this process's cache, else the run dir

    def resolved_model(self):
        """The run's model reference, resolved once (data resolve needs its tokenizer, so it may come first)."""
        from studio_core.models.resolve import resolve_model

        if "model" not in self.outputs:
            cfg = self.config.model
            self.outputs["model"] = resolve_model(cfg.ref, self.model_cache, cfg.revision)
        return self.outputs["model"]

    def tokenizer(self):
        from studio_core.models.resolve import load_tokenizer

        if "tokenizer" not in self.outputs:
            self.outputs["tokenizer"] = load_tokenizer(self.resolved_model())
        return self.outputs["tokenizer"]

    def prepared_data(self):
        """Step 1's result: the normalised splits, their tokens and the report."""
        from studio_core.data.prepare import PreparedData
        from studio_core.data.tokenize import TokenizedExample
        from studio_core.errors import StudioError
        from studio_core.runs import read_jsonl

        if "data" not in self.outputs:
            folder = self.run.artifacts / "data"
            if not (folder / "train.tokens.jsonl").is_file():
                raise StudioError(f"no tokenized data in {folder}: step 1 (Data Resolve) has not completed in this run")
            rows = {s: [r["messages"] for r in read_jsonl(folder / f"{s}.jsonl")] for s in ("train", "val")}
            tokens = {s: [TokenizedExample(**t) for t in read_jsonl(folder / f"{s}.tokens.jsonl")]
                      for s in ("train", "val")}
            self.outputs["data"] = PreparedData(rows["train"], rows["val"], tokens["train"], tokens["val"],
                                                self.read_artifact("data/report.json"))
        return self.outputs["data"]

    def precision(self) -> str:
        """The compute precision Training Init chose (bf16, fp16 or fp32)."""
        if "precision" not in self.outputs:
            self.outputs["precision"] = self.read_artifact("training_init.json")["precision"]
        return self.outputs["precision"]
