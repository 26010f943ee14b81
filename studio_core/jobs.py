"""Runs as supervised child processes, queued on disk, one at a time per studio home.

The queue is the run dirs in state `queued` (see `studio_core.runs`), oldest first: `enqueue` creates the run
dir at once, so a queued run is listed everywhere, and the queue survives a studio restart. The studio's
`Supervisor` thread takes the oldest queued run, starts it as a child process running the same engine entry
point as the CLI (`peft-studio run --job RUN_ID`), and supervises it:
- the child's stdout and stderr go to `job.log` in the run dir, so a crash or an out-of-memory kill shows;
- its CPU %, resident memory and (where NVML answers) GPU memory and utilisation are sampled every few
  seconds into `resources.jsonl`, and the peaks kept in `job.json`;
- its exit code or the signal that killed it is recorded in `job.json`; a child that died without finishing
  its run (SIGKILL, out of memory) leaves the run `interrupted`, with the signal named, and resumable.
The supervisor never imports torch or a model: a crash in training cannot take the studio down.

Cancel crosses processes as a file in the run dir (`studio_core.context.request_cancel`): the run honours it at
its next step or stage boundary; a child that has not stopped `cancel_grace_s` later gets SIGTERM (which it
turns into a cancel at once), and SIGKILL `term_grace_s` after that. A queued run is cancelled on the spot.

`job.claim` (created exclusively) makes taking a queued run atomic, between two supervisors on one home and
between a supervisor and a cancel. Secrets a run needs (a signing key's passphrase) are held in the studio's
memory only and written to the child's stdin, never to disk or the queue.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from studio_core.config import RunConfig
from studio_core.context import CANCEL_FILE, request_cancel
from studio_core.errors import InputError
from studio_core.hardware.usage import ProcessSampler, with_peaks
from studio_core.runs import (
    RunDir,
    RunStore,
    append_jsonl,
    atomic_write_json,
    config_file_text,
    new_run_id,
    utc_now,
)

CLAIM_FILE = "job.claim"
JOB_FILE = "job.json"
LOG_FILE = "job.log"
RESOURCES_FILE = "resources.jsonl"
RESUMABLE = ("interrupted", "cancelled", "failed")
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])  # the child imports the same studio_core as the studio


# ---------------------------------------------------------------- the queue on disk

def enqueue(config: RunConfig, home: str | Path | None = None, *, resume: str | None = None,
            requested_by: str | None = None, needs_secrets: list[str] | None = None) -> RunDir:
    """Put a new run (or the resumption of run `resume`) in the home's queue; returns its run dir."""
    from studio_core.workflow import STAGES, check_runnable

    check_runnable(config)  # refuse now, in the caller's process, not later in the child
    store = RunStore(home)
    queued = {"at": utc_now(), "requested_by": requested_by, "resume": bool(resume),
              "needs_secrets": sorted(needs_secrets or [])}
    if resume:
        run = store.get(resume)
        status = run.read_status()
        if status["state"] not in RESUMABLE:
            raise InputError(f"run {resume} is {status['state']}; only an interrupted, cancelled or failed run "
                             "can be resumed")
        for name in (CLAIM_FILE, CANCEL_FILE):
            (run.path / name).unlink(missing_ok=True)
        status.update(state="queued", queued=queued, error=None)
        run.write_status(status)
    else:
        run = store.create(config_file_text(config.model_dump_json()), new_run_id(config.name, config.simulate),
                           [s.name for s in STAGES], config.simulate, queued=queued)
    run.event("queued", "resume queued" if resume else "queued", requested_by=requested_by)
    return run


def queued_runs(home: str | Path | None = None) -> list[RunDir]:
    """The runs waiting in the home's queue, next first."""
    waiting = []
    for run in RunStore(home).list():
        status = run.read_status()
        if status["state"] == "queued":
            waiting.append((status.get("queued", {}).get("at") or "", run))
    return [run for _, run in sorted(waiting, key=lambda pair: pair[0])]


def queue_position(run_id: str, home: str | Path | None = None) -> int | None:
    """1 for the next run to start; None when the run is not waiting."""
    ids = [run.run_id for run in queued_runs(home)]
    return ids.index(run_id) + 1 if run_id in ids else None


def running_runs(home: str | Path | None = None) -> list[RunDir]:
    """Every run whose process is alive, started by the studio's queue or from the CLI."""
    return [run for run in RunStore(home).list() if run.read_status()["state"] == "running"]


def active_run(home: str | Path | None = None) -> RunDir | None:
    """The run the studio's queue is running now (else a run started from the CLI), read from disk."""
    running = running_runs(home)
    queued_by_studio = [r for r in running if r.job_record().get("pid")]
    return (queued_by_studio or running or [None])[0]


def cancel(run_id: str, home: str | Path | None = None, *, requested_by: str | None = None) -> str:
    """Cancel a queued run on the spot, or ask a running one to stop; returns the run's state afterwards."""
    run = RunStore(home).get(run_id)
    state = run.read_status()["state"]
    if state == "queued" and _claim(run):
        _end_unstarted(run, "cancelled", "cancelled while queued", requested_by=requested_by)
        return "cancelled"
    if state in ("queued", "running"):  # queued but just claimed: the child takes the request at its start
        request_cancel(run, requested_by)
        run.event("cancel_requested", "cancel requested", requested_by=requested_by)
        return "cancelling"
    raise InputError(f"run {run_id} is {state}: there is nothing to cancel")


def _end_unstarted(run: RunDir, state: str, error: str, **event: Any) -> None:
    """Finish a claimed run whose process never started (cancelled while queued, a secret missing); a cancel also
    marks its pending stages cancelled. The claim is released so that it can be queued again to resume."""
    status = run.read_status()
    for stage in status.get("stages", {}).values():
        if state == "cancelled" and stage.get("state") == "pending":
            stage["state"] = state
    status.update(state=state, finished_at=utc_now(), error=error)
    run.write_status(status)
    run.event(f"run_{state}", error, **event)
    (run.path / CLAIM_FILE).unlink(missing_ok=True)


def _claim(run: RunDir) -> bool:
    try:
        fd = os.open(run.path / CLAIM_FILE, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps({"pid": os.getpid(), "at": utc_now()}))
    return True


# ---------------------------------------------------------------- the supervisor

class Supervisor:
    """Drains one studio home's queue: one child process at a time, supervised until it exits."""

    def __init__(self, home: str | Path | None = None, *, poll_s: float = 0.5, sample_s: float = 2.0,
                 cancel_grace_s: float = 60.0, term_grace_s: float = 10.0, secrets: dict | None = None):
        self.home = RunStore(home).home
        self.poll_s, self.sample_s = poll_s, sample_s
        self.cancel_grace_s, self.term_grace_s = cancel_grace_s, term_grace_s
        self.secrets: dict[str, dict[str, str]] = secrets if secrets is not None else {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle
    def start(self) -> Supervisor:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="peft-studio-supervisor", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop taking new runs (a run in progress keeps going in its own process)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self.step():
                self._stop.wait(self.poll_s)

    def drain(self) -> int:
        """Run the queue in this thread until it is empty (`peft-studio queue work`); returns the runs run."""
        count = 0
        while self.step():
            count += 1
        return count

    def step(self) -> bool:
        """Supervise an adopted run to its end, or start and supervise the next queued one; False if idle."""
        adopted = self._adoptable()
        if adopted is not None:
            self._supervise(adopted, None)
            return True
        for run in queued_runs(self.home):
            if _claim(run):
                self._start(run)
                return True
        return False

    def _adoptable(self) -> RunDir | None:
        """A run a previous studio process started and that is still running: wait for it (one job at a time)."""
        for run in running_runs(self.home):
            job = run.job_record()
            if job.get("pid") and job.get("ended_at") is None and job.get("supervisor_pid") != os.getpid():
                return run
        return None

    # -- one job
    def _start(self, run: RunDir) -> None:
        status = run.read_status()
        needed = status.get("queued", {}).get("needs_secrets", [])
        secrets = self.secrets.pop(run.run_id, {})
        missing = [name for name in needed if name not in secrets]
        if missing:
            _end_unstarted(run, "failed", f"the secret(s) {', '.join(missing)} this run needs were held in the memory "
                                         "of the studio that queued it, and are gone (the studio restarted); resume "
                                         "the run and enter them again")
            return
        if (run.path / CANCEL_FILE).exists():  # cancelled between queueing and now
            _end_unstarted(run, "cancelled", "cancelled while queued")
            return
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_PACKAGE_ROOT,
                                                                          os.environ.get("PYTHONPATH")]))}
        command = [sys.executable, "-m", "studio_core.cli", "run", "--job", run.run_id, "--home", str(self.home)]
        with open(run.path / LOG_FILE, "ab") as log:
            log.write(f"---- {utc_now()} {' '.join(command[2:])}\n".encode())
            log.flush()
            proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)  # a studio restart (or Ctrl-C) leaves the run going
        try:
            proc.stdin.write(json.dumps(secrets).encode())
            proc.stdin.close()
        except BrokenPipeError:
            pass  # the child died at once: its log says why
        self._supervise(run, proc)

    def _supervise(self, run: RunDir, proc: subprocess.Popen | None) -> None:
        job = run.job_record() if proc is None else {
            "pid": proc.pid, "started_at": utc_now(), "ended_at": None, "exit_code": None, "signal": None}
        job["supervisor_pid"] = os.getpid()
        atomic_write_json(run.path / JOB_FILE, job)
        pid = job["pid"]
        try:
            sampler = ProcessSampler(pid)
        except psutil.Error:
            sampler = None
        next_sample = time.monotonic() + self.sample_s
        cancel_seen = term_sent = kill_sent = None
        while True:
            if proc is not None:
                if proc.poll() is not None:
                    break
            elif not _pid_alive(pid):
                break
            now = time.monotonic()
            if sampler is not None and now >= next_sample:
                next_sample = now + self.sample_s
                reading = sampler.sample()
                if reading is not None:
                    reading = {"time": utc_now(), "pid": pid, **reading}
                    append_jsonl(run.path / RESOURCES_FILE, reading)
                    job["peaks"] = with_peaks(job.get("peaks"), reading)  # an adopted run keeps its earlier peaks
                    atomic_write_json(run.path / JOB_FILE, job)
            if (run.path / CANCEL_FILE).exists():
                cancel_seen = cancel_seen or now
                if term_sent is None and now - cancel_seen >= self.cancel_grace_s:
                    term_sent = now
                    _signal(pid, signal.SIGTERM)
                    run.event("cancel_escalated", f"the run did not stop within {self.cancel_grace_s:.0f} s of the "
                                                  "cancel request: sent SIGTERM")
                elif term_sent is not None and kill_sent is None and now - term_sent >= self.term_grace_s:
                    kill_sent = now
                    _signal(pid, signal.SIGKILL)
                    run.event("cancel_escalated", f"still running {self.term_grace_s:.0f} s after SIGTERM: sent "
                                                  "SIGKILL")
            time.sleep(min(self.poll_s, 0.25))
        self._record_exit(run, job, proc, cancelled=cancel_seen is not None)

    def _record_exit(self, run: RunDir, job: dict[str, Any], proc: subprocess.Popen | None, cancelled: bool) -> None:
        job["ended_at"] = utc_now()
        if proc is not None:
            code = proc.returncode
            job["exit_code"], job["signal"] = (None, signal.Signals(-code).name) if code < 0 else (code, None)
        else:
            job["exit_status_unknown"] = "the studio that started this process restarted while it ran"
        status = run.read_status()
        if status["state"] in ("running", "interrupted", "queued"):  # the child died before it could say so
            how = (f"was killed by {job['signal']}" if job.get("signal") else
                   f"exited with code {job['exit_code']}" if job.get("exit_code") is not None else "ended")
            hint = " (SIGKILL without a cancel is often the out-of-memory killer)" if (
                job.get("signal") == "SIGKILL" and not cancelled) else ""
            state = "cancelled" if cancelled else "failed" if status["state"] == "queued" else "interrupted"
            error = (f"cancelled: the run's process {how} after the cancel request" if cancelled else
                     f"the run's process {how}{hint} before finishing; see job.log" + (
                         "; resume it to continue from its last checkpoint" if state == "interrupted" else ""))
            for stage in status.get("stages", {}).values():
                if stage.get("state") == "running":
                    stage["state"] = "cancelled" if cancelled else "failed"
                    stage["error"] = error
            status.update(state=state, finished_at=utc_now(), error=error)
            run.write_status(status)
            run.event(f"run_{state}", error, signal=job.get("signal"), exit_code=job.get("exit_code"))
        (run.path / CLAIM_FILE).unlink(missing_ok=True)  # a resume can queue it again
        atomic_write_json(run.path / JOB_FILE, job)  # last: `ended_at` there means the whole outcome is recorded


def _pid_alive(pid: int) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


# ---------------------------------------------------------------- the studio's handle

@dataclass
class Job:
    run_id: str
    home: Path

    @property
    def run(self) -> RunDir:
        return RunStore(self.home).get(self.run_id)

    @property
    def state(self) -> str:
        return self.run.read_status()["state"]


class JobRunner:
    """What the studio calls: submit to the queue, cancel, and the supervisor threads (one per home)."""

    def __init__(self, **supervisor_options: Any) -> None:
        self._lock = threading.Lock()
        self._supervisors: dict[Path, Supervisor] = {}
        self._secrets: dict[str, dict[str, str]] = {}
        self.options = supervisor_options

    def supervisor(self, home: str | Path | None = None) -> Supervisor:
        """The home's supervisor, started on first use (the studio calls this on every page)."""
        key = RunStore(home).home
        with self._lock:
            sup = self._supervisors.get(key)
            if sup is None:
                sup = self._supervisors[key] = Supervisor(key, secrets=self._secrets, **self.options)
            sup.start()
            return sup

    def submit(self, config: RunConfig, home: str | Path | None = None, *, resume: str | None = None,
               requested_by: str | None = None, secrets: dict[str, str] | None = None) -> Job:
        """Queue a run (or the resumption of run `resume`); `secrets` become the child's environment variables,
        passed through its stdin and never written anywhere."""
        run = enqueue(config, home, resume=resume, requested_by=requested_by, needs_secrets=list(secrets or {}))
        if secrets:
            self._secrets[run.run_id] = dict(secrets)
        sup = self.supervisor(home)
        return Job(run.run_id, sup.home)

    def cancel(self, run_id: str, home: str | Path | None = None, *, requested_by: str | None = None) -> str:
        self._secrets.pop(run_id, None)
        return cancel(run_id, home, requested_by=requested_by)

    def wait(self, run_id: str, home: str | Path | None = None, timeout: float | None = None) -> str:
        """Block until the run is neither queued nor running, nor still held by its supervisor (tests, scripts)."""
        run = RunStore(home).get(run_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            state = run.read_status()["state"]
            job = run.job_record()
            settled = state not in ("queued", "running") and (not job.get("pid") or job.get("ended_at"))
            if settled:
                return state
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} is still {state}")
            time.sleep(0.1)

    def stop(self) -> None:
        with self._lock:
            for sup in self._supervisors.values():
                sup.stop()
            self._supervisors.clear()


JOBS = JobRunner()
