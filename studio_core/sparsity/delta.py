"""Keep every adapter update inside the base's 2:4 mask (as SQFT / SparsePEFT do): the trained function is
W*m + m*(s B@A) for LoRA, and DoRA's magnitude times that direction, so what trains is exactly what merges.

Each targeted peft LoRA layer gets, on the instance: the mask, a forward that applies the masked dense update,
and a `get_delta_weight` that returns the masked update, which peft's own merge (LoRA and DoRA) then uses. The
stock adapter files are unchanged: loaded by plain peft, their update is applied unmasked.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F

MASK_ATTR = "_studio_2of4_mask"


def base_path(peft_path: str) -> str:
    """A peft module path's path in the bare model ("base_model.model.model.layers.0..." -> "model.layers.0...")."""
    return peft_path.removeprefix("base_model.model.")


def mask_adapter(peft_model, masks: dict[str, torch.Tensor]) -> list[str]:
    """Install the masked update on every LoRA layer whose base layer has a mask; returns their base paths.

    A LoRA layer on a pruned base that has no mask, or a mask left without a layer, is an error: either would
    let a dense update in or drop a pruned layer silently.
    """
    from peft.tuners.lora import LoraLayer

    wrapped = []
    for path, module in peft_model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        name = base_path(path)
        if name not in masks:
            raise ValueError(f"adapter layer {name} has no 2:4 mask: pruning.targets must cover every adapted layer "
                             "(an unmasked update would break the pattern)")
        if getattr(module, "fan_in_fan_out", False):
            raise ValueError(f"{name}: a transposed (Conv1D) layer cannot be kept 2:4 by this studio")
        setattr(module, MASK_ATTR, masks[name])
        module.forward = types.MethodType(_masked_forward, module)
        module.get_delta_weight = types.MethodType(_masked_delta_weight, module)
        wrapped.append(name)
    return wrapped


def _mask_for(layer, like: torch.Tensor) -> torch.Tensor:
    mask = getattr(layer, MASK_ATTR)
    if mask.device != like.device:
        mask = mask.to(like.device)
        setattr(layer, MASK_ATTR, mask)
    return mask.to(like.dtype)


def _masked_delta_weight(self, adapter: str) -> torch.Tensor:
    delta = type(self).get_delta_weight(self, adapter)
    return delta * _mask_for(self, delta)


def _masked_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """peft's LoRA forward with the update masked: base(x) + dropout(x) @ (m * s B@A)^T (DoRA: scaled per row
    by magnitude / ||W + m * s B@A||, the norm detached as in peft and the DoRA paper)."""
    from peft.utils.integrations import dequantize_module_weight

    if self.disable_adapters or self.merged or kwargs.get("adapter_names") is not None:
        return type(self).forward(self, x, *args, **kwargs)
    result = self.base_layer(x, *args, **kwargs)
    result_dtype = result.dtype
    for adapter in self.active_adapters:
        if adapter not in self.lora_A:
            continue
        lora_a, lora_b = self.lora_A[adapter], self.lora_B[adapter]
        xa = self._cast_input_dtype(x, lora_a.weight.dtype)
        delta = (lora_b.weight @ lora_a.weight) * self.scaling[adapter]
        delta = delta * _mask_for(self, delta)
        update = F.linear(self.lora_dropout[adapter](xa), delta)
        if adapter in self.lora_variant:  # DoRA
            weight = dequantize_module_weight(self.base_layer).to(delta.dtype)
            norm = torch.linalg.norm(weight + delta.detach(), dim=1).detach()
            scale = (self.lora_magnitude_vector[adapter].weight / norm).view(1, -1)
            bias = self.base_layer.bias
            base_only = result - bias if bias is not None else result
            result = result + (scale - 1) * base_only + scale * update
        else:
            result = result + update
    return result.to(result_dtype)
