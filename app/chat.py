"""The chat playground's worker: one `peft-studio chat RUN --jsonl` child process per (run, source), shared by every
browser (the models load once), its replies gathered by a reader thread.

Why a process and not a thread: the studio process never imports torch (tests/test_engine_boundary.py), a long
generation holds no lock any page needs, and a crash or an out-of-memory kill in generation leaves the studio up.
The worker loads its models lazily, when first asked, and stays until the studio stops or `stop()` is called.
Threads never call `st.*`: the page's fragment polls `reply(request_id)`.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import streamlit as st


@dataclass
class Reply:
    """One request's streamed answer: text per side, done when the worker said so."""

    text: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    done: bool = False
    error: str | None = None


class ChatWorker:
    def __init__(self, run_dir: Path, source: str, home: Path):
        command = [sys.executable, "-m", "studio_core.cli", "chat", str(run_dir), "--source", source, "--jsonl",
                   "--home", str(home)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, bufsize=1)
        self.ready: dict[str, Any] | None = None
        self.failure: str | None = None
        self.replies: dict[int, Reply] = {}
        self.ids = itertools.count(1)
        self.lock = threading.Lock()
        threading.Thread(target=self._read, name="chat-reader", daemon=True).start()

    def ask(self, requests: list[dict[str, Any]]) -> int:
        """Queue the requests (one per side, each with its own conversation) under one id; returns it."""
        request_id = next(self.ids)
        with self.lock:
            self.replies[request_id] = Reply()
            for request in requests:
                self.process.stdin.write(json.dumps({**request, "id": request_id}) + "\n")
            self.process.stdin.write(json.dumps({"id": request_id, "end": True}) + "\n")
            self.process.stdin.flush()
        return request_id

    def reply(self, request_id: int) -> Reply | None:
        return self.replies.get(request_id)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.process.terminate()

    def _read(self) -> None:
        for line in self.process.stdout:
            record = json.loads(line)
            if "ready" in record:
                self.ready = record["ready"]
                continue
            reply = self.replies.get(record.get("id"))
            if reply is None:
                continue
            if "text" in record:
                reply.text[record["side"]] = reply.text.get(record["side"], "") + record["text"]
            elif record.get("done") and "side" in record:
                reply.seconds[record["side"]] = record["seconds"]
            elif "error" in record:
                reply.error, reply.done = record["error"], True
            elif record.get("end"):
                reply.done = True
        self.failure = (self.process.stderr.read() or "")[-2000:] or f"exit code {self.process.wait()}"
        for reply in self.replies.values():
            if not reply.done:
                reply.error, reply.done = f"the chat worker stopped: {self.failure}", True


@st.cache_resource
def _workers() -> dict[tuple[str, str], ChatWorker]:
    return {}


def worker(run_dir: Path, source: str, home: Path) -> ChatWorker:
    """The live worker of a run and source, started on first use (or again after it died)."""
    workers = _workers()
    key = (str(run_dir), source)
    if key not in workers or not workers[key].alive():
        workers[key] = ChatWorker(run_dir, source, home)
    return workers[key]
