"""Step 7, Dynamic Sparsification: compressed gradients during training, a compressed update after it.

- During Training Exec, with several processes: a DDP communication hook (Rand-K or Top-K with error feedback,
  `hooks.py`) compresses the adapter's gradients; it joins the Trainer through `trainer_parts` and its bytes per
  step join every training metric line (`comm_bytes`, `comm_dense_bytes`, `comm_compression`). One process has no
  gradient exchange, so there is no hook: the stage says so.
- Stage 7 itself (`sparsification_report`): the bytes the hook sent, and the trained update shipped as a sparse
  top-k file (`updates.py`, `artifacts/comm/update.safetensors` at `comm.ratio`), with the size-vs-quality curve:
  each k/d in `comm.update_ratios` written, loaded back onto the base and measured on the validation split.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from studio_core.context import RunContext

UPDATE_FILE = "comm/update.safetensors"


def trainer_parts(ctx: RunContext):
    """The gradient compression hook and its byte counts, for a run with comm enabled on several processes."""
    from studio_core.train.distributed import is_distributed

    cfg = ctx.config.comm
    if not cfg.enabled or not is_distributed(ctx.config):
        return None
    from studio_core.comm.hooks import HOOKS, CommState
    from studio_core.train.trainer import TrainerParts

    state = CommState(cfg.method, cfg.ratio, cfg.seed)
    return TrainerParts(comm_hook=(state, HOOKS[cfg.method]), metric_fields=[lambda _trainer_state: state.take()])


def gradient_summary(ctx: RunContext) -> dict[str, Any]:
    """What the hook sent per step, from the run's metric lines (rank 0's own count)."""
    from studio_core.train.distributed import world_processes

    cfg, processes = ctx.config.comm, world_processes(ctx.config)
    if processes < 2:
        return {"used": False, "processes": processes,
                "reason": "gradient compression needs at least 2 training processes (training.nproc x "
                          f"training.nnodes >= 2); this run trained in {processes}, with no gradient exchange to "
                          "compress, so only the update compression shipped"}
    lines = [m for m in ctx.run.metrics() if "comm_bytes" in m]
    if not lines:
        return {"used": False, "processes": processes, "reason": "no step recorded the hook's bytes"}
    sent = sum(m["comm_bytes"] for m in lines) / len(lines)
    dense = sum(m["comm_dense_bytes"] for m in lines) / len(lines)
    return {"used": True, "processes": processes, "method": cfg.method, "ratio": cfg.ratio, "steps": len(lines),
            "bytes_per_step": round(sent), "dense_bytes_per_step": round(dense),
            "compression": round(dense / sent, 2)}


def update_curve(ctx: RunContext) -> dict[str, Any]:
    """The update as top-k files: the shipped one at comm.ratio, and the curve's points loaded back and measured."""
    import torch
    from safetensors.torch import load_file

    from studio_core.comm.updates import (
        apply_update,
        dense_bytes,
        layer_updates,
        load_sparse_update,
        save_sparse_update,
    )
    from studio_core.evaluate.basic import validation_loss
    from studio_core.train.batching import supervised_rows
    from studio_core.train.lifecycle import fresh_base

    merged = ctx.run.artifacts / "merged"
    if not (merged / "config.json").is_file():
        return {"shipped": None, "reason": "the method's adapter does not merge into weights (prefix or prompt "
                                           "tuning), so there is no weight update to compress"}
    base = fresh_base(ctx).eval()
    merged_state: dict[str, torch.Tensor] = {}
    for file in sorted(merged.glob("*.safetensors")):
        merged_state.update(load_file(str(file)))
    updates = layer_updates(dict(base.named_parameters()), merged_state)
    cfg = ctx.config
    val_rows = supervised_rows(ctx.prepared_data())[1][: cfg.evaluation.max_rows]
    pad_id, batch = ctx.tokenizer().pad_token_id, cfg.training.per_device_batch_size
    originals = {name: p.detach().clone() for name, p in base.named_parameters() if name in updates}
    points = [{"ratio": 0.0, "bytes": 0, "val_loss": validation_loss(base, val_rows, pad_id, batch)}]
    for ratio in sorted(set(cfg.comm.update_ratios) | {cfg.comm.ratio}, reverse=True):
        path = ctx.run.artifacts / ("comm/update.safetensors" if ratio == cfg.comm.ratio else f"comm/curve-{ratio}.safetensors")
        size = save_sparse_update(path, updates, ratio)
        apply_update(base, load_sparse_update(path))  # loaded back from the file, as a receiver would
        points.append({"ratio": ratio, "bytes": size, "val_loss": validation_loss(base, val_rows, pad_id, batch)})
        with torch.no_grad():
            for name, p in base.named_parameters():
                if name in originals:
                    p.copy_(originals[name])
        if path.name != "update.safetensors":
            path.unlink()  # the curve's files are measured, not shipped
    return {"shipped": UPDATE_FILE, "ratio": cfg.comm.ratio, "layers": len(updates),
            "dense_bytes": dense_bytes(updates), "val_rows": len(val_rows), "precision": "fp32",
            "curve": [p for p in points if p["ratio"] in cfg.comm.update_ratios or p["ratio"] == 0.0],
            "shipped_point": next(p for p in points if p["ratio"] == cfg.comm.ratio)}


def sparsification_report(ctx: RunContext) -> dict[str, Any]:
    """Stage 7's report: gradient compression during training, the shipped sparse update and its curve."""
    gradients = gradient_summary(ctx)
    if not gradients["used"]:
        ctx.emit("warning", f"comm: {gradients['reason']}")
    update = update_curve(ctx)
    parts = []
    if gradients["used"]:
        parts.append(f"{gradients['method']} k/d={gradients['ratio']}: {gradients['bytes_per_step']:,} bytes/step "
                     f"per process instead of {gradients['dense_bytes_per_step']:,} ({gradients['compression']}x)")
    if update.get("shipped"):
        point = update["shipped_point"]
        parts.append(f"update at k/d={update['ratio']}: {point['bytes']:,} bytes (dense {update['dense_bytes']:,}), "
                     f"val loss {point['val_loss']:.4f}")
    else:
        parts.append(update["reason"])
    return {"gradients": gradients, "update": update, "simulated": ctx.simulated, "summary": "; ".join(parts)}
