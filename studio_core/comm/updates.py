"""The shipped adapter update as a sparse file: each layer's update kept as its top-k entries.

The update of a layer is what the adapter adds to its weight: merged weight minus base weight (for LoRA, the scaled
B @ A), so any mergeable method is covered. `save_sparse_update` keeps the k = ceil(ratio x d) largest-magnitude
entries of each layer's update as two safetensors tensors, `<name>.indices` (int32 flat positions, int64 past 2^31
entries) and `<name>.values` (fp32), with the layer's shape in the file's metadata; `load_sparse_update` reads it
back to dense updates and `apply_update` adds them to a base model, which is how the size-vs-quality curve is
measured: each file loaded back onto the base and evaluated on the validation split.

At k/d = 1 the file holds every entry plus its index (about twice the dense update); the sparse form pays off
below k/d = 0.5.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from studio_core.comm.hooks import keep_count


def layer_updates(base_state: dict[str, torch.Tensor], merged_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Merged minus base for every weight the adapter changed (fp32)."""
    updates = {}
    for name, merged in merged_state.items():
        base = base_state.get(name)
        if base is None or base.shape != merged.shape or not merged.is_floating_point():
            continue
        delta = merged.float() - base.float()
        if torch.count_nonzero(delta):
            updates[name] = delta
    return updates


def sparsify(update: torch.Tensor, ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, values) of the k largest-magnitude entries of one layer's update."""
    flat = update.reshape(-1)
    index = flat.abs().topk(keep_count(flat.numel(), ratio), sorted=True).indices
    dtype = torch.int32 if flat.numel() < 2**31 else torch.int64
    return index.to(dtype), flat[index].contiguous()


def save_sparse_update(path: Path, updates: dict[str, torch.Tensor], ratio: float) -> int:
    """Write the top-k file of `updates` at k/d = `ratio`; returns its size in bytes."""
    from safetensors.torch import save_file

    tensors, shapes = {}, {}
    for name, update in updates.items():
        tensors[f"{name}.indices"], tensors[f"{name}.values"] = sparsify(update, ratio)
        shapes[name] = list(update.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": "peft-studio-sparse-update", "ratio": repr(ratio),
                                            "shapes": json.dumps(shapes)})
    return path.stat().st_size


def load_sparse_update(path: Path) -> dict[str, torch.Tensor]:
    """The dense per-layer updates of a sparse update file (zeros where no entry was kept)."""
    from safetensors import safe_open

    from studio_core.errors import InputError

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != "peft-studio-sparse-update":
            raise InputError(f"{path}: not a sparse update file (its metadata has no format "
                             "'peft-studio-sparse-update'); write one with save_sparse_update")
        updates = {}
        for name, shape in json.loads(meta["shapes"]).items():
            dense = torch.zeros(int(torch.tensor(shape).prod()), dtype=torch.float32)
            dense[f.get_tensor(f"{name}.indices").long()] = f.get_tensor(f"{name}.values").float()
            updates[name] = dense.view(shape)
    return updates


@torch.no_grad()
def apply_update(model, updates: dict[str, torch.Tensor], sign: float = 1.0) -> None:
    """Add (or with sign=-1, take back) the updates to the model's weights in place."""
    params = dict(model.named_parameters())
    for name, update in updates.items():
        param = params[name]
        param.add_(update.to(device=param.device, dtype=param.dtype), alpha=sign)


def dense_bytes(updates: dict[str, torch.Tensor]) -> int:
    """The fp32 size of the dense updates (what a full delta would take)."""
    return sum(u.numel() * 4 for u in updates.values())
