"""The run store on disk: the studio home, run directories, status, events and metrics.

The run dir is the source of truth that the CLI, the UI and a teammate's browser all read. Every
whole-file write is atomic (write to a temp file, fsync, rename). A run is only ever `completed` after its
last stage finished; a process killed at any point leaves a dir that reads as `interrupted`:
- killed before the dir got its first status: the dir is still `runs/.creating-*`, which is never listed;
- killed while running: status says `running` but its process (pid + start time) is gone.

A run the studio queued has its dir from the start, in state `queued` with no owner process: the queue is
the run dirs in that state, oldest first, so it survives a studio restart (see `studio_core.jobs`).
"""

from __future__ import annotations

import copy
import json
import os
import re
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import psutil

RunState = Literal["queued", "running", "completed", "failed", "interrupted", "cancelled"]
StageState = Literal["pending", "running", "completed", "failed", "skipped", "cancelled", "interrupted"]
FINAL_STATES = ("completed", "failed", "cancelled")
CONFIG_SCHEMA_VERSION = 3
"""The layout of a run dir's config.json. 1: the bare RunConfig (up to commit 5550a46); 2: the same fields with
`schema_version` beside them; 3: `data.demo_answer`, and the demo's recipe (`DEMO_RECIPE` in config.py) for the
fields a config leaves out. `RunDir.config_data` migrates older files, so old run dirs list, open and resume."""
CONFIG_MIGRATIONS: dict[int, dict[str, str]] = {1: {}, 2: {}}
"""Per version: dotted key renames applied to reach the next version (none so far)."""
CONFIG_BACKFILL: dict[int, dict[str, Any]] = {2: {
    "data.demo_answer": "verdict_first", "training.max_steps": 40, "training.per_device_batch_size": 4,
    "training.gradient_accumulation_steps": 2, "training.label_words": [], "training.label_group": "",
    "evaluation.task_rows": 32}}
"""Per version: what a field a config of that version (or older) leaves out meant then, set where it is missing,
so an old run resumes on the rows and settings it started with: the demo's verdict-first answers and the plain
defaults, not the recipe that version 3 fills in."""


def studio_home(home: str | Path | None = None) -> Path:
    """The studio home: the given dir, else $PEFT_STUDIO_HOME, else ~/.peft-studio."""
    if home is None:
        home = os.environ.get("PEFT_STUDIO_HOME") or Path.home() / ".peft-studio"
    return Path(home).expanduser().resolve()


def model_cache_dir(home: Path) -> Path:
    """Where converted and downloaded models live: $PEFT_STUDIO_MODEL_CACHE, else <home>/models."""
    override = os.environ.get("PEFT_STUDIO_MODEL_CACHE")
    return Path(override).expanduser().resolve() if override else home / "models"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` so that readers see either the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def atomic_write_jsonl(path: Path, records: list[Any]) -> None:
    """Write records as JSON lines (canonical: sorted keys), atomically."""
    from studio_core.digest import canonical_json

    atomic_write_text(path, "".join(canonical_json(r) + "\n" for r in records))


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line; a torn last line (killed mid-write) is skipped by `read_jsonl`."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, default=str) + "\n")
        f.flush()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # only a torn last line from a killed writer can be partial
    return records


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:32] or "run"


def new_run_id(name: str, simulate: bool) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    sim = "-sim" if simulate else ""
    return f"{stamp}-{_slug(name)}{sim}-{secrets.token_hex(2)}"


def _process_identity() -> dict[str, Any]:
    me = psutil.Process()
    return {"pid": me.pid, "pid_started": me.create_time(), "host": socket.gethostname()}


def _process_alive(owner: dict[str, Any]) -> bool:
    if not owner:
        return False
    if owner.get("host") != socket.gethostname():
        return True  # another machine's run: we cannot tell, so do not call it interrupted
    try:
        proc = psutil.Process(owner["pid"])
        return abs(proc.create_time() - owner["pid_started"]) < 1.0  # guards against pid reuse
    except (psutil.NoSuchProcess, KeyError, TypeError):
        return False


@dataclass
class RunDir:
    """One run's directory and the writes a run makes to it."""

    path: Path

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def artifacts(self) -> Path:
        return self.path / "artifacts"

    @property
    def status_file(self) -> Path:
        return self.path / "status.json"

    def read_status(self) -> dict[str, Any]:
        """The run's status, with a dead `running` run reported as `interrupted`."""
        try:
            status = json.loads(self.status_file.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return {"run_id": self.run_id, "state": "interrupted", "stages": {}, "error": "no status written"}
        if status.get("state") == "running" and not _process_alive(status.get("owner") or {}):
            status["state"] = "interrupted"
        job = self.job_record()
        if job:  # written by the studio's supervisor, never by the run's own process: no write races
            status["process"] = {k: job.get(k) for k in ("pid", "exit_code", "signal", "started_at", "ended_at")}
            status["resources"] = job.get("peaks", {})
        return status

    def job_record(self) -> dict[str, Any]:
        """`job.json`: the supervisor's record of the run's process (pid, exit code or signal, resource peaks)."""
        try:
            return json.loads((self.path / "job.json").read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def write_status(self, status: dict[str, Any]) -> None:
        status["updated_at"] = utc_now()
        atomic_write_json(self.status_file, status)

    def event(self, kind: str, message: str = "", **data: Any) -> None:
        append_jsonl(self.path / "events.jsonl", {"time": utc_now(), "type": kind, "message": message, **data})

    def metric(self, **values: Any) -> None:
        append_jsonl(self.path / "metrics.jsonl", {"time": utc_now(), **values})

    def drop_metrics_after(self, step: int) -> None:
        """Forget metric lines past `step`: a resumed run replays those steps from its checkpoint."""
        atomic_write_jsonl(self.path / "metrics.jsonl", [m for m in self.metrics() if m.get("step", 0) <= step])

    def events(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path / "events.jsonl")

    def metrics(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path / "metrics.jsonl")

    def config_data(self) -> dict[str, Any]:
        """The run's config as RunConfig data, migrated from the version of PEFT Studio that wrote it."""
        return migrate_config(json.loads((self.path / "config.json").read_text(encoding="utf-8")))

    def disk_bytes(self) -> int:
        """What the run dir holds on disk (checkpoints, merged model, exports), in bytes."""
        total = 0
        for root, _, files in os.walk(self.path):
            for name in files:
                try:
                    total += os.lstat(os.path.join(root, name)).st_size
                except OSError:
                    continue  # removed while walking (a checkpoint rotated away)
        return total


class RunStore:
    """The `runs/` folder of a studio home."""

    def __init__(self, home: str | Path | None = None):
        self.home = studio_home(home)
        self.root = self.home / "runs"

    def create(self, config_json: str, run_id: str, stage_names: list[str], simulated: bool,
               queued: dict[str, Any] | None = None) -> RunDir:
        """Create a run dir with its config and a `running` status (owned by this process), made visible in one
        rename; with `queued` (who asked, when), a `queued` status with no owner instead."""
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f".creating-{run_id}"
        staging.mkdir()
        run = RunDir(staging)
        atomic_write_text(staging / "config.json", config_json)
        (staging / "artifacts").mkdir()
        for name in ("events.jsonl", "metrics.jsonl"):
            (staging / name).touch()
        now = utc_now()
        status = {
            "run_id": run_id, "state": "running", "simulated": simulated, "created_at": now,
            "started_at": now, "finished_at": None, "owner": _process_identity(), "error": None,
            "stages": {name: {"state": "pending"} for name in stage_names},
        }
        if queued is not None:
            status.update(state="queued", started_at=None, owner=None, queued=queued)
        run.write_status(status)
        final = self.root / run_id
        os.rename(staging, final)
        return RunDir(final)

    def get(self, run_id: str) -> RunDir:
        path = self.root / run_id
        if not run_id or "/" in run_id or run_id.startswith(".") or not path.is_dir():
            from studio_core.errors import InputError

            raise InputError(f"no run '{run_id}' in {self.root}; `peft-studio runs --home {self.home}` lists them")
        return RunDir(path)

    def list(self) -> list[RunDir]:
        """Every run, newest first (staging dirs of runs still being created are not runs yet)."""
        if not self.root.is_dir():
            return []
        runs = [RunDir(p) for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        return sorted(runs, key=lambda r: r.run_id, reverse=True)


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KiB' (what the CLI's and the studio's run lists show for disk use)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def config_file_text(config_json: str) -> str:
    """config.json as a run dir stores it: the resolved RunConfig with its schema version."""
    data = json.loads(config_json)
    return json.dumps({"schema_version": CONFIG_SCHEMA_VERSION, **data}, indent=2) + "\n"


def migrate_config(data: dict[str, Any]) -> dict[str, Any]:
    """RunConfig data from a config.json of any earlier schema version (renamed keys moved to their new names)."""
    data = dict(data)
    version = data.pop("schema_version", 1)
    if not isinstance(version, int) or version > CONFIG_SCHEMA_VERSION:
        from studio_core.errors import InputError

        raise InputError(f"config.json has schema_version {version!r}, newer than this PEFT Studio reads "
                         f"({CONFIG_SCHEMA_VERSION}); open the run with the version that wrote it")
    for v in range(version, CONFIG_SCHEMA_VERSION):
        for old, new in CONFIG_MIGRATIONS.get(v, {}).items():
            value = _pop_dotted(data, old)
            if value is not _MISSING:
                _set_dotted(data, new, value)
    for v in range(version, CONFIG_SCHEMA_VERSION):
        for dotted, value in CONFIG_BACKFILL.get(v, {}).items():
            if _get_dotted(data, dotted) is _MISSING:
                _set_dotted(data, dotted, copy.deepcopy(value))
    return data


def _get_dotted(data: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return _MISSING
        data = data[part]
    return data


_MISSING = object()


def _pop_dotted(data: dict[str, Any], dotted: str) -> Any:
    *parents, last = dotted.split(".")
    for part in parents:
        data = data.get(part, {})
        if not isinstance(data, dict):
            return _MISSING
    return data.pop(last, _MISSING)


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        data = data.setdefault(part, {})
    data[last] = value


def mark_running_again(run: RunDir, resumed: bool = True) -> None:
    """Take over a run (queued, or to resume it): this process becomes its owner."""
    status = run.read_status()
    status.update(state="running", owner=_process_identity(), error=None, finished_at=None)
    status["started_at"] = status.get("started_at") or utc_now()
    if resumed:
        status["resumed_at"] = utc_now()
    run.write_status(status)
