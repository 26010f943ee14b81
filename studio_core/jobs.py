"""The job registry: one background worker runs queued runs one at a time (a workstation has one job slot).

Process-global and keyed by run id, so every browser session of the studio sees the same jobs. The worker
calls `workflow.run` exactly as the CLI does; it never touches the UI. Pages poll `job(run_id)` or the run
dir on disk.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from studio_core.config import RunConfig
from studio_core.runs import new_run_id


@dataclass
class Job:
    run_id: str
    config: RunConfig
    home: Path | None
    resume: bool = False
    state: str = "queued"  # queued | running | completed | failed | cancelled | interrupted
    error: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)


class JobRegistry:
    """A FIFO queue of runs and the single worker thread that drains it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[Job] = deque()
        self._jobs: dict[str, Job] = {}
        self._worker: threading.Thread | None = None

    def submit(self, config: RunConfig, home: Path | None = None, resume: str | None = None) -> Job:
        """Queue a new run (or the resumption of run `resume`); returns its job, keyed by run id."""
        from studio_core.workflow import check_runnable

        check_runnable(config)  # refuse now, in the caller's thread, not later in the worker
        run_id = resume or new_run_id(config.name, config.simulate)
        job = Job(run_id, config, home, resume=bool(resume))
        with self._lock:
            if run_id in self._jobs and self._jobs[run_id].state in ("queued", "running"):
                raise ValueError(f"run {run_id} is already {self._jobs[run_id].state}")
            self._jobs[run_id] = job
            self._queue.append(job)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._drain, name="peft-studio-worker", daemon=True)
                self._worker.start()
        return job

    def job(self, run_id: str) -> Job | None:
        return self._jobs.get(run_id)

    def queue_position(self, run_id: str) -> int | None:
        """1 for the next job to start; None when the run is not waiting."""
        with self._lock:
            for position, job in enumerate(self._queue, start=1):
                if job.run_id == run_id:
                    return position
        return None

    def active(self) -> Job | None:
        with self._lock:
            return next((j for j in self._jobs.values() if j.state == "running"), None)

    def cancel(self, run_id: str) -> None:
        """Cancel a running job at its next step boundary, or drop a queued one."""
        with self._lock:
            job = self._jobs.get(run_id)
            if job is None:
                return
            if job.state == "queued":
                self._queue.remove(job)
                job.state = "cancelled"
            job.cancel.set()

    def wait(self, run_id: str, timeout: float | None = None) -> Job:
        """Block until the job leaves the queue and finishes (tests and scripts)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._jobs[run_id].state in ("queued", "running"):
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} is still {self._jobs[run_id].state}")
            time.sleep(0.05)
        return self._jobs[run_id]

    def _next(self) -> Job | None:
        with self._lock:
            if not self._queue:
                self._worker = None
                return None
            job = self._queue.popleft()
            job.state = "running"
            return job

    def _drain(self) -> None:
        while (job := self._next()) is not None:
            self._run(job)

    def _run(self, job: Job) -> None:
        from studio_core import workflow
        from studio_core.errors import CancelledError

        try:
            if job.resume:
                workflow.run(job.config, job.home, resume=job.run_id, cancel=job.cancel)
            else:
                workflow.run(job.config, job.home, cancel=job.cancel, run_id=job.run_id)
            job.state = "completed"
        except CancelledError:
            job.state = "cancelled"
        except Exception as e:  # noqa: BLE001 - the run dir holds the details; the job keeps the message
            job.state, job.error = "failed", str(e)
            if not isinstance(e, workflow.StageFailed):
                job.error += "\n" + traceback.format_exc(limit=3)


JOBS = JobRegistry()
