"""One torchrun worker of a run's training (`studio_core.train.distributed` launches them; its docstring says how
the pieces fit). `python -m studio_core.distributed_worker launch ...` is torchrun itself, told to stop when the
process that started it dies; without `launch`, it is a worker: it rebuilds the run's PEFT model from the run dir,
trains its rank's share with the same `train` and Trainer parts as one process, and, on rank 0, writes the
outcome and the trained weights for the launcher. Ranks other than 0 write only `logs/rank-N.log`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from studio_core.train.distributed import (
    LAUNCH_DIR,
    LAUNCH_FILE,
    LOG_DIR,
    OUTCOME_FILE,
    START_WEIGHTS,
    TRAINED_WEIGHTS,
    DistributedCancel,
    is_peer_lost,
    launch_main,
)


def _redirect_output(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)


def _worker_model(ctx, launch: dict[str, Any], folder: Path):
    """The PEFT model the launcher built, rebuilt in this process: same base, same method, same start weights."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, set_seed

    from studio_core.sparsity import run as sparsity
    from studio_core.train.lifecycle import build_peft_model, load_training_model

    set_seed(ctx.config.training.seed)
    if launch["simulated"]:
        model = AutoModelForCausalLM.from_pretrained(ctx.run.artifacts / "simulation-base", use_safetensors=True)
    else:
        model = load_training_model(ctx, launch["precision"])
    sparsity.prepare_base(ctx, model)  # a pruned run: step 5's masks on the base, checked against the pinned digest
    peft_model, _ = build_peft_model(ctx, model)
    sparsity.mask_adapter(ctx, peft_model)  # ... and the update kept inside them, as in the launcher's model
    set_peft_model_state_dict(peft_model, load_file(str(folder / START_WEIGHTS)))
    return peft_model


def worker_main(argv: list[str] | None = None) -> int:
    """One torchrun worker: train the run's adapter with its rank's share of every batch."""
    import argparse

    from studio_core.config import validate_config
    from studio_core.context import CancelSignal, RunContext
    from studio_core.runs import RunStore

    parser = argparse.ArgumentParser(prog="python -m studio_core.distributed_worker")
    parser.add_argument("--home", required=True)
    parser.add_argument("--run-id", required=True)
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    store = RunStore(args.home)
    run = store.get(args.run_id)
    if rank != 0:
        _redirect_output(run.path / LOG_DIR / f"rank-{rank}.log")
    print(f"rank {rank} of {os.environ.get('WORLD_SIZE')}: pid {os.getpid()}, host {os.uname().nodename}", flush=True)
    from studio_core.cli import _print_event, _quiet_libraries

    _quiet_libraries()
    folder = run.artifacts / LAUNCH_DIR
    launch = json.loads((folder / LAUNCH_FILE).read_text(encoding="utf-8"))
    config = validate_config(launch["config"])
    ctx = RunContext(config, run, store.home, DistributedCancel(CancelSignal(run.path)),
                     _print_event if rank == 0 else None)
    ctx.outputs["precision"] = launch["precision"]
    try:
        outcome = _train(ctx, launch, folder, rank)
    except Exception as e:  # a failure, not a kill: the launcher reports the run failed, with this message
        if is_peer_lost(e):
            raise  # another rank went away (killed): that is an interruption, not this rank's failure
        (run.path / LOG_DIR).mkdir(exist_ok=True)
        (run.path / LOG_DIR / f"rank-{rank}.error").write_text(f"{type(e).__name__}: {e}", encoding="utf-8")
        raise
    if rank == 0:
        _write_outcome(ctx, outcome, folder)
    _leave_process_group()
    return 0


def _leave_process_group() -> None:
    """Destroy the process group before the interpreter exits. Left to finalization, gloo's worker threads can abort
    the process (SIGABRT, "terminate called without an active exception"; pytorch/pytorch#190489): seen once on
    rank 1 after its last step, which failed a finished run."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _train(ctx, launch: dict[str, Any], folder: Path, rank: int):
    from studio_core import stages
    from studio_core.train.batching import supervised_rows
    from studio_core.train.trainer import train

    def quiet(*args, **kwargs) -> None:  # ranks other than 0 write nothing in the run dir
        return None

    peft_model = _worker_model(ctx, launch, folder)
    ctx.outputs["peft_model"] = peft_model
    data = ctx.prepared_data()
    train_rows, val_rows = supervised_rows(data)
    emit, metric = (ctx.emit, ctx.run.metric) if rank == 0 else (quiet, quiet)
    return train(ctx.config, peft_model, train_rows, val_rows, ctx.tokenizer().pad_token_id, ctx.run.path,
                 launch["precision"], emit, metric, ctx.cancel, stages.trainer_parts(ctx))


def _write_outcome(ctx, outcome, folder: Path) -> None:
    from dataclasses import asdict

    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    from studio_core.runs import atomic_write_json

    state = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(ctx.outputs["peft_model"]).items()}
    save_file(state, str(folder / TRAINED_WEIGHTS))
    atomic_write_json(folder / OUTCOME_FILE, json.loads(json.dumps(asdict(outcome), default=str)))


if __name__ == "__main__":
    sys.exit(launch_main(sys.argv[2:]) if sys.argv[1:2] == ["launch"] else worker_main())
