"""Compressed storage of 2:4 tensors: the 2 kept values of every group of 4, and their 2-bit positions.

compressed-tensors 0.20.1 (installed) no longer ships its sparse-24 bitmask compressor (only the config class
is left; its ModelCompressor says the Sparse24 format is unsupported after 0.14), so the format is our own:

    <name>.values     [out, in/2]   the tensor's dtype: the kept values, in group order
    <name>.positions  [out, in/8]   uint8: per group the two kept indices i < j as i | j << 2 (4 bits), two groups
                                    a byte (low nibble first)

At 16 bits a weight that is 2 bytes dense costs 1 byte of values + 1/8 byte of positions: 0.5625x. The round
trip is exact (bit for bit): a group with fewer than 2 non-zeros stores zeros at unused positions.
"""

from __future__ import annotations

from pathlib import Path

import torch

from studio_core.sparsity.pattern import GROUP, KEEP, violations

FORMAT = "peft-studio/sparse-2of4/v1"


def compress(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, positions) of a 2:4 tensor; raises if any group holds more than 2 non-zeros."""
    bad = violations(weight)
    if bad:
        raise ValueError(f"not 2:4: {bad} group(s) of 4 hold more than 2 non-zeros")
    out, width = weight.shape
    groups = weight.detach().reshape(out, width // GROUP, GROUP)
    # Non-zeros first (stable, so in index order), then the lowest-index zeros; the two kept sorted by index.
    order = torch.argsort((groups == 0).to(torch.int8), dim=-1, stable=True)[..., :KEEP]
    index = torch.sort(order, dim=-1).values
    values = torch.gather(groups, -1, index).reshape(out, -1).contiguous()
    codes = (index[..., 0] | (index[..., 1] << 2)).to(torch.uint8)  # [out, groups]
    if codes.shape[1] % 2:
        codes = torch.nn.functional.pad(codes, (0, 1))
    positions = (codes[:, 0::2] | (codes[:, 1::2] << 4)).contiguous()
    return values, positions


def decompress(values: torch.Tensor, positions: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The dense tensor back from `compress`'s output."""
    out, width = shape
    n_groups = width // GROUP
    codes = torch.stack([positions & 0xF, positions >> 4], dim=-1).reshape(out, -1)[:, :n_groups].long()
    index = torch.stack([codes & 0b11, codes >> 2], dim=-1)
    dense = torch.zeros(out, n_groups, GROUP, dtype=values.dtype)
    dense.scatter_(-1, index, values.reshape(out, n_groups, KEEP))
    return dense.reshape(out, width)


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def save_compressed(state: dict[str, torch.Tensor], pruned: list[str], path: Path) -> dict:
    """Write `state` to one safetensors file, the `pruned` tensors compressed; returns the size report.

    The report gives, per pruned tensor and in total, dense against compressed bytes at the stored dtype and at
    16 bits (bf16/fp16, what a deployment stores), each measured on real compressed tensors.
    """
    from safetensors.torch import save_file

    tensors, layers = {}, []
    for name, tensor in state.items():
        if name not in pruned:
            tensors[name] = tensor.contiguous()
            continue
        values, positions = compress(tensor)
        tensors[f"{name}.values"], tensors[f"{name}.positions"] = values, positions
        half_values, _ = compress(tensor.to(torch.bfloat16))
        layers.append({"name": name, "shape": list(tensor.shape), "dtype": str(tensor.dtype).removeprefix("torch."),
                       "dense_bytes": nbytes(tensor), "compressed_bytes": nbytes(values) + nbytes(positions),
                       "dense_bytes_16bit": tensor.numel() * 2,
                       "compressed_bytes_16bit": nbytes(half_values) + nbytes(positions)})
    metadata = {"format": FORMAT, "shapes": ";".join(f"{x['name']}={x['shape'][0]}x{x['shape'][1]}" for x in layers)}
    save_file(tensors, str(path), metadata=metadata)
    total = {k: sum(x[k] for x in layers) for k in ("dense_bytes", "compressed_bytes", "dense_bytes_16bit",
                                                   "compressed_bytes_16bit")}
    return {"format": FORMAT, "file": path.name, "file_bytes": path.stat().st_size, "layers": layers, **total,
            "ratio": total["compressed_bytes"] / max(1, total["dense_bytes"]),
            "ratio_16bit": total["compressed_bytes_16bit"] / max(1, total["dense_bytes_16bit"])}


def load_compressed(path: Path) -> dict[str, torch.Tensor]:
    """The dense state dict back from `save_compressed`'s file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
        if metadata.get("format") != FORMAT:
            raise ValueError(f"{path}: not a {FORMAT} file (format {metadata.get('format')!r})")
        shapes = dict(item.split("=") for item in metadata.get("shapes", "").split(";") if item)
        state = {}
        for key in f.keys():
            if key.endswith(".positions"):
                continue
            if key.endswith(".values") and key.removesuffix(".values") in shapes:
                name = key.removesuffix(".values")
                out, width = (int(v) for v in shapes[name].split("x"))
                state[name] = decompress(f.get_tensor(key), f.get_tensor(f"{name}.positions"), (out, width))
            else:
                state[key] = f.get_tensor(key)
    return state
