"""Pruning the base model to 2:4 before an adapter is built: which layers, the scores, the masks on disk.

Targets are linear layers named like an adapter's target modules ('auto': every linear layer inside the
decoder blocks, i.e. the attention and MLP projections); embeddings, norms and the LM head are never pruned.
Wanda's activation norms come from one forward pass of the dense model over the calibration rows (the original
Wanda prunes block by block, feeding each block the pruned blocks' outputs; one pass is the cheaper variant).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch

from studio_core.errors import ConfigError, Problem
from studio_core.sparsity.pattern import check_shape, magnitude_scores, mask_from_scores, violations, wanda_scores

NEVER = ("lm_head", "embed", "wte", "wpe", "norm", "ln_", "score", "embed_out")
LINEAR_KINDS = ("Linear", "Linear4bit")
BLOCK = re.compile(r"\.(layers|layer|h|blocks|block)\.\d+\.")  # a linear inside a numbered decoder block


def forbidden_target(name: str) -> bool:
    return any(part in name for part in NEVER)


def target_layers(model, targets: list[str] | str) -> dict[str, torch.nn.Module]:
    """{dotted path: linear module} of the layers to prune; names are matched as peft matches target_modules."""
    found = {}
    for path, module in model.named_modules():
        if type(module).__name__ not in LINEAR_KINDS or forbidden_target(path.rsplit(".", 1)[-1]):
            continue
        chosen = bool(BLOCK.search(f".{path}")) if targets == "auto" else any(path == t or path.endswith("." + t) for t in targets)
        if chosen:
            found[path] = module
    if not found:
        raise ConfigError(Problem("pruning.targets", f"{targets!r} selects no linear layer of this model; name its "
                                  "projections, e.g. [\"q_proj\", \"v_proj\"], or use 'auto'"))
    return found


def dense_weight(module) -> torch.Tensor:
    """The layer's weight in full precision (a 4-bit layer's de-quantized: what QLoRA trains against)."""
    if type(module).__name__ == "Linear4bit":
        import bitsandbytes.functional as bnbf

        return bnbf.dequantize_4bit(module.weight.data, module.weight.quant_state).float()
    return module.weight.data


@torch.no_grad()
def input_norms(model, layers: dict[str, torch.nn.Module], batches) -> dict[str, torch.Tensor]:
    """||X_j||_2 per input feature of each layer over the non-padding tokens of `batches` (Wanda's statistic)."""
    sums = {name: torch.zeros(module.in_features, dtype=torch.float64) for name, module in layers.items()}
    current: dict[str, torch.Tensor] = {}

    def hook(name):
        def record(_module, args):
            x = args[0].detach().double()
            keep = current["mask"].reshape(-1).to(x.device)
            sums[name] += (x.reshape(-1, x.shape[-1])[keep] ** 2).sum(0).cpu()
        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in layers.items()]
    try:
        model.eval()
        for batch in batches:
            current["mask"] = batch["attention_mask"].bool()
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    finally:
        for h in handles:
            h.remove()
    return {name: s.sqrt().float() for name, s in sums.items()}


def compute_masks(model, layers: dict[str, torch.nn.Module], method: str, batches=None) -> dict[str, torch.Tensor]:
    """{layer path: bool mask} of the 2:4 pattern per layer, by magnitude or Wanda (needs `batches`)."""
    for name, module in layers.items():
        check_shape(name, dense_weight(module))
    norms = input_norms(model, layers, batches) if method == "wanda" else {}
    masks = {}
    for name, module in layers.items():
        weight = dense_weight(module)
        scores = wanda_scores(weight, norms[name]) if method == "wanda" else magnitude_scores(weight)
        masks[name] = mask_from_scores(scores).cpu()
    return masks


@torch.no_grad()
def apply_masks(layers: dict[str, torch.nn.Module], masks: dict[str, torch.Tensor]) -> None:
    """Zero the pruned weights in place; a 4-bit layer is re-quantized from its masked de-quantized weight (NF4
    has an exact 0, so the zeros survive quantization)."""
    for name, module in layers.items():
        mask = masks[name].to(module.weight.device)
        if type(module).__name__ == "Linear4bit":
            _requantize(module, dense_weight(module) * mask)
        else:
            module.weight.data.mul_(mask.to(module.weight.dtype))


def _requantize(module, weight: torch.Tensor) -> None:
    import bitsandbytes.functional as bnbf

    state = module.weight.quant_state
    packed, new_state = bnbf.quantize_4bit(weight.to(state.dtype).contiguous(), blocksize=state.blocksize,
                                           quant_type=state.quant_type, compress_statistics=state.nested,
                                           quant_storage=module.weight.data.dtype)
    module.weight.data = packed
    module.weight.quant_state = new_state


def layer_report(layers: dict[str, torch.nn.Module]) -> list[dict]:
    """Per layer: shape, sparsity, violating groups (checked on the weights as they are now)."""
    rows = []
    for name, module in layers.items():
        weight = dense_weight(module)
        rows.append({"name": name, "shape": list(weight.shape), "sparsity": round(float((weight == 0).float().mean()), 6),
                     "violations": violations(weight)})
    return rows


def masks_digest(masks: dict[str, torch.Tensor]) -> str:
    """sha256 over the masks in name order (name, shape, packed bits): independent of the file's layout."""
    import numpy as np

    h = hashlib.sha256()
    for name in sorted(masks):
        h.update(f"{name}:{tuple(masks[name].shape)}\n".encode())
        h.update(np.packbits(masks[name].numpy(), axis=-1).tobytes())
    return h.hexdigest()


def state_digest(model) -> str:
    """sha256 over the model's floating-point state in name order (name, dtype, shape, bytes): the pruned base's
    identity. A 4-bit layer contributes its packed bytes."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_masks(masks: dict[str, torch.Tensor], path: Path) -> None:
    """Masks as packed bits (numpy packbits along the input dimension, little bit order), one tensor a layer."""
    import numpy as np
    from safetensors.torch import save_file

    packed = {name: torch.from_numpy(np.packbits(m.numpy(), axis=-1, bitorder="little")) for name, m in masks.items()}
    widths = ";".join(f"{name}={m.shape[1]}" for name, m in sorted(masks.items()))
    save_file(packed, str(path), metadata={"format": "peft-studio/masks-2of4/v1", "widths": widths})


def load_masks(path: Path) -> dict[str, torch.Tensor]:
    import numpy as np
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        widths = dict(item.split("=") for item in (f.metadata() or {}).get("widths", "").split(";") if item)
        return {name: torch.from_numpy(np.unpackbits(f.get_tensor(name).numpy(), axis=-1, count=int(widths[name]),
                                                     bitorder="little").astype(bool)) for name in f.keys()}
