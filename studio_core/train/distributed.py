"""Training on several processes (and machines) through PyTorch's own launcher, torchrun.

Why the training stage launches torchrun, rather than the whole run going under it: a run is one child process
of the studio's supervisor (`studio_core.jobs`), and stages 1-5 (data, model, pre-flight, PEFT init) need one
process, not N racing on one run dir. So that process stays the run's owner, and Training Exec, when
`training.nproc x training.nnodes > 1`, becomes the launcher of `python -m torch.distributed.run` (torchrun:
c10d rendezvous, gloo on CPU, nccl on GPU). Its workers (`python -m studio_core.distributed_worker`) read what
they need from the run dir: `artifacts/distributed/launch.json` (the resolved config, precision, the adapter's
initial weights written next to it) and the tokenized data, build the same PEFT model, and train it with the same
`studio_core.train.trainer.train` the one-process path runs; the HF Trainer does DDP itself under torchrun, and
DDP exchanges only parameters that require grad, i.e. the adapter's gradients.

Rank 0 owns the run dir: metrics, events, checkpoints, the outcome and the trained adapter's weights. The other
ranks write only their logs (`logs/rank-N.log`) and, as the Trainer does in every DDP checkpoint, their own RNG
state file in it. The launcher then loads the trained weights into its model, and the stage goes on (save,
reload check, merge) as in one process. A worker that dies makes torchrun stop the others and exit non-zero: the
stage raises `RunInterrupted`, the run reads `interrupted`, and `--resume` continues from the last checkpoint,
with the same or another number of processes.

Several machines need the studio home on a file system they share (NFS, Lustre): node 0 runs `peft-studio run
... --nnodes N --node-rank 0 --rdzv-endpoint host:port --run-id ID`, every other node `peft-studio run --run-id ID
--nnodes N --node-rank R --rdzv-endpoint host:port` (or torchrun itself: `join_command`), see the README.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

LAUNCH_DIR = "distributed"
LAUNCH_FILE = "launch.json"
OUTCOME_FILE = "outcome.json"
START_WEIGHTS = "start_adapter.safetensors"
TRAINED_WEIGHTS = "trained_adapter.safetensors"
LOG_DIR = "logs"
WORKER_MODULE = "studio_core.distributed_worker"  # named, not imported: it imports the stages, which import this
JOIN_TIMEOUT_S = 1800  # other machines may wait this long at the rendezvous for node 0's stages 1-5
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def world_processes(cfg) -> int:
    """How many training processes the run has across all its machines."""
    return cfg.training.nproc * cfg.training.nnodes


def is_distributed(cfg) -> bool:
    return world_processes(cfg) > 1


def torchrun_command(nproc: int, nnodes: int, node_rank: int, endpoint: str | None, home: Path,
                     run_id: str) -> list[str]:
    """`python -m torch.distributed.run ...` for this node's workers of run `run_id`."""
    command = [sys.executable, "-m", WORKER_MODULE, "launch", f"--nproc-per-node={nproc}", "--max-restarts=0"]
    if nnodes == 1 and not endpoint:
        command.append("--standalone")  # a free local port, no rendezvous server to name
    else:
        command += [f"--nnodes={nnodes}", f"--node-rank={node_rank}", "--rdzv-backend=c10d",
                    f"--rdzv-endpoint={endpoint}", f"--rdzv-conf=join_timeout={JOIN_TIMEOUT_S}"]
    return command + ["-m", WORKER_MODULE, "--home", str(home), "--run-id", run_id]


def _environment() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [_PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def launch_main(torchrun_args: list[str]) -> int:
    """torchrun itself (`torch.distributed.run`), told to stop when the process that started it dies: a run whose
    process is killed (out of memory, SIGKILL) must not leave its workers training on."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux
    from torch.distributed.run import main

    main(torchrun_args)
    return 0


def run_launcher(command: list[str]) -> int:
    """Run a torchrun launcher to its end; on any interruption of this process, stop it (and its workers)."""
    proc = subprocess.Popen(command, env=_environment())
    try:
        return proc.wait()
    except BaseException:
        proc.send_signal(signal.SIGTERM)  # torchrun forwards it to its workers
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise


# ---------------------------------------------------------------- the launching process (Training Exec)

def train_distributed(ctx, cfg, node_rank: int = 0):
    """Training Exec's distributed path: launch this node's workers, wait, load what rank 0 trained.

    `cfg` is the run's effective config (simulation caps applied); returns the `TrainOutcome` rank 0 wrote.
    """
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file, save_file

    from studio_core.errors import RunInterrupted, StudioError
    from studio_core.runs import atomic_write_json
    from studio_core.train.trainer import TrainOutcome

    folder = ctx.artifact_dir(LAUNCH_DIR)
    (folder / OUTCOME_FILE).unlink(missing_ok=True)
    for stale in (ctx.run.path / LOG_DIR).glob("rank-*.error"):
        stale.unlink()
    peft_model = ctx.outputs["peft_model"]
    start = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(peft_model).items()}
    save_file(start, str(folder / START_WEIGHTS))
    atomic_write_json(folder / LAUNCH_FILE, {
        "config": cfg.model_dump(mode="json"), "precision": ctx.outputs["precision"],
        "simulated": ctx.simulated, "processes": world_processes(cfg), "nproc": cfg.training.nproc,
        "nnodes": cfg.training.nnodes, "rdzv_endpoint": cfg.training.rdzv_endpoint,
    })
    t = cfg.training
    ctx.emit("distributed_launch", f"training on {world_processes(cfg)} processes ({t.nproc} per machine x "
                                   f"{t.nnodes} machine(s)) through torchrun, {backend_name()}",
             processes=world_processes(cfg), nproc=t.nproc, nnodes=t.nnodes)
    command = torchrun_command(t.nproc, t.nnodes, node_rank, t.rdzv_endpoint, ctx.home, ctx.run.run_id)
    code = run_launcher(command)
    outcome_path = folder / OUTCOME_FILE
    errors = sorted((ctx.run.path / LOG_DIR).glob("rank-*.error"))
    if errors:  # a worker raised: the run failed (a config or code problem), it was not merely interrupted
        raise StudioError(f"training process {errors[0].stem} failed: {errors[0].read_text(encoding='utf-8')} "
                          f"(its log: {LOG_DIR}/{errors[0].stem}.log)")
    if code != 0 or not outcome_path.is_file():
        raise RunInterrupted(f"a training process ended before training finished (torchrun exit code {code}; each "
                             f"rank's log is in {LOG_DIR}/ and job.log); resume the run to continue from its last "
                             "checkpoint, with the same or another number of processes")
    outcome = json.loads(outcome_path.read_text(encoding="utf-8"))
    if not outcome["cancelled"]:
        set_peft_model_state_dict(peft_model, load_file(str(folder / TRAINED_WEIGHTS)))
    return TrainOutcome(**outcome)


def backend_name() -> str:
    from studio_core.catalog import is_cuda_available

    return "nccl on GPU" if is_cuda_available() else "gloo on CPU"


def join(home: Path, run_id: str, nproc: int, nnodes: int, node_rank: int, endpoint: str) -> int:
    """Another machine's part in run `run_id` (its home on a shared file system): this node's workers only."""
    return run_launcher(torchrun_command(nproc, nnodes, node_rank, endpoint, home, run_id))


# ---------------------------------------------------------------- the workers

class DistributedCancel:
    """The run's cancel signal, agreed by every rank at each check: one rank seeing the request stops them all
    at the same step (a rank stopping alone would leave the others waiting in a collective)."""

    def __init__(self, local):
        self.local = local

    def is_set(self) -> bool:
        import torch
        import torch.distributed as dist

        flag = bool(self.local.is_set())
        if not (dist.is_available() and dist.is_initialized()):
            return flag
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        value = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)


PEER_LOST = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL communicator was aborted",
             "Socket Timeout", "recvBytes", "sendBytes")


def is_peer_lost(error: BaseException) -> bool:
    """The collective failed because another rank is gone (gloo's reset connection, NCCL's abort), which is how a
    rank sees a killed peer: the run was interrupted there, this rank did nothing wrong."""
    import torch.distributed as dist

    text = str(error)
    return isinstance(error, getattr(dist, "DistNetworkError", ())) or any(marker in text for marker in PEER_LOST)
