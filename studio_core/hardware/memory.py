"""Training memory estimate: weights, adapter, optimizer state, gradients and activations.

A first-order model (to be calibrated against measured peaks): activations per layer follow Korthikanti
et al. 2022, ~(34 * s * b * h + 5 * a * s^2 * b) bytes at 16-bit, doubled at fp32; gradient checkpointing
keeps only each layer's input (s * b * h values) plus one layer's full activations.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

BYTES_PER_PARAM = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "nf4": 0.5 + 0.0625}  # nf4 + double-quant scales
GIB = 1024**3


@dataclass(frozen=True)
class MemoryEstimate:
    weights: float
    adapter: float
    optimizer: float
    gradients: float
    activations: float

    @property
    def total(self) -> float:
        return self.weights + self.adapter + self.optimizer + self.gradients + self.activations

    def as_gib(self) -> dict[str, float]:
        values = {k: round(v / GIB, 3) for k, v in asdict(self).items()}
        values["total"] = round(self.total / GIB, 3)
        return values


def estimate_training_memory(
    *, base_params: int, adapter_params: int, layers: int, hidden: int, heads: int, batch: int,
    seq_len: int, weight_format: str, compute: str, gradient_checkpointing: bool,
) -> MemoryEstimate:
    """Bytes needed to train an adapter of `adapter_params` on a frozen base of `base_params`."""
    act_bytes = 2.0 if compute in ("bf16", "fp16") else 4.0
    per_layer = (34 * seq_len * batch * hidden + 5 * heads * seq_len**2 * batch) * act_bytes / 2
    if gradient_checkpointing:
        activations = layers * seq_len * batch * hidden * act_bytes + per_layer
    else:
        activations = layers * per_layer
    return MemoryEstimate(
        weights=base_params * BYTES_PER_PARAM[weight_format],
        adapter=adapter_params * 4.0,  # adapters train in fp32 master weights
        optimizer=adapter_params * 8.0,  # AdamW: two fp32 moments
        gradients=adapter_params * 4.0,
        activations=activations,
    )
