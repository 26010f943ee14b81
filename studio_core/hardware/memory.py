"""Training memory estimate: weights, adapter, optimizer state, gradients, activations, logits and allocator.

A first-order model by component, each counted from what PyTorch keeps alive at the peak of a training step
(the start of the backward pass), for a Llama-style decoder (norm, attention, gated MLP) with an adapter on
the attention and MLP projections:

- weights at load precision: fp32, or bf16 where training computes in bf16 (`train.precision.base_dtype`). A
  4-bit (nf4) base keeps its embeddings (and untied lm_head) unquantized, at the fp32 the studio loads it in.
  On CPU a bf16 base is counted at fp32's size: the RSS after loading SmolLM2-135M measured 641 MB in bf16
  against 670 MB in fp32 (257 against 513 MB of weights): loading leaves about as much resident either way.
  On CPU the loader memory-maps the fp32 checkpoint and, with a 4-bit base, the mapping stays resident beside
  the quantized copy, so CPU RSS counts both (measured: QLoRA's RSS after loading exceeded LoRA's by ~0.2 GiB).
  Those file pages are clean, so a machine short of memory can reclaim them: there the CPU figure for a 4-bit
  base is pessimistic by up to the checkpoint's size.
- adapter, gradients and AdamW's two moments, all fp32.
- activations, per token and layer: the two norm inputs (2h), the attention's query and output (2h) and
  key/value (2 kv, from scaled_dot_product_attention's fused kernel, which keeps no seq^2 probabilities unless
  the model runs eager attention), the gated MLP's gate, activation and up outputs (3 ffn), and the adapter's
  own: with dropout, a mask and a dropped copy of each adapted projection's input (2 x (6h + ffn)); without,
  one copy per distinct input (3h + ffn). Gradient checkpointing keeps each layer's input (h) plus one
  layer's full activations, recomputed during backward. Plus the embedding output and the final norm (3h).
- logits: the loss upcasts them to fp32, and at the start of backward the log-softmax output (kept for the
  loss), its gradient and the logits' gradient are alive: 3 x tokens x vocab x 4 bytes (plus the 16-bit
  logits' gradient under bf16/fp16). With a 49k vocabulary and a 135M model this is the largest term.
- per-example gradients, under differential privacy (Opacus): each example of a physical batch keeps its own
  fp32 adapter gradient until it is clipped (batch x adapter x 4 bytes), plus the clipped sum and the noise
  (2 x adapter x 4). Opacus' hooks keep no activations autograd does not keep already (lora_A's input and
  lora_B's input are saved for the backward pass anyway). Not calibrated by a measurement: counted from shapes.
- allocator (CPU only): glibc malloc serves the MB-sized per-layer tensors from its heap, which fragments and
  keeps freed memory resident (mallinfo2 after one forward at 1024 tokens: ~1 GiB free but held, 250 MiB in
  use; with the heap's dynamic mmap threshold turned off, the peak fell to the live bytes above). Measured,
  the excess over the live bytes was a fixed ~0.25 GiB (PyTorch's CPU runtime while training) plus 1.0x the
  activations all layers create in one forward, 0.75x with gradient checkpointing (each layer then frees
  what it made, and the next reuses more of it; the recomputation makes the same allocations again).

Calibrated against bench/memory.py: the measured peak RSS of three real training steps (fp32, AdamW) on the
embedded SmolLM2-135M-Instruct (vocab 49152), LoRA on an fp32 base and QLoRA on an nf4 base, r=16 on all seven
projections with dropout, batch x seq of 1x256, 4x256, 2x512 and 4x512 (LoRA) or 1x256 and 2x512 (QLoRA),
with and without gradient checkpointing. Every term above is counted from the model's shapes except the three
allocator figures, fitted (shared by all rows) to 24 measurements from two earlier runs. Estimate / measured
was 0.90-1.15 over those and 0.92-1.09 on a third, later run of the grid; identical runs differ by up to 15%
(glibc fragmentation), so expect +-25% on CPU. On CPU "device memory" is the process's resident memory. The
GPU side was not measured: on CUDA the caching allocator's fragmentation and the CUDA context are not
modelled (no allocator term), and 16-bit compute is assumed to halve the fp32 activations.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

BYTES_PER_PARAM = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "nf4": 0.5 + 0.0625}  # nf4 + double-quant scales
LOAD_BYTES = 4.0  # the checkpoint's fp32, what the nf4 and bf16 loads leave resident on CPU
# CPU only: glibc heap kept resident, in units of one forward's activations over all layers (measured).
CPU_HEAP_RETENTION = {False: 1.0, True: 0.75}  # by gradient checkpointing
CPU_RUNTIME = 0.25 * 1024**3  # fixed: PyTorch's CPU runtime while training (the measured intercept)
GIB = 1024**3


@dataclass(frozen=True)
class MemoryEstimate:
    weights: float
    adapter: float
    optimizer: float
    gradients: float
    activations: float
    logits: float = 0.0
    allocator: float = 0.0
    per_sample_gradients: float = 0.0  # differential privacy only

    @property
    def total(self) -> float:
        return sum(asdict(self).values())

    def as_gib(self) -> dict[str, float]:
        values = {k: round(v / GIB, 3) for k, v in asdict(self).items()}
        values["total"] = round(self.total / GIB, 3)
        return values


def model_shape(config: Any) -> dict[str, Any]:
    """The architecture facts `estimate_training_memory` needs, from a transformers model config."""
    heads = config.num_attention_heads
    return {
        "layers": config.num_hidden_layers, "hidden": config.hidden_size, "heads": heads,
        "kv_heads": getattr(config, "num_key_value_heads", None) or heads,
        "intermediate": getattr(config, "intermediate_size", None) or 4 * config.hidden_size,
        "vocab": config.vocab_size, "tied_embeddings": bool(getattr(config, "tie_word_embeddings", False)),
        "attention_probs": getattr(config, "_attn_implementation", None) == "eager",
    }


def estimate_training_memory(
    *, base_params: int, adapter_params: int, layers: int, hidden: int, heads: int, batch: int,
    seq_len: int, weight_format: str, compute: str, gradient_checkpointing: bool, vocab: int,
    kv_heads: int | None = None, intermediate: int | None = None, tied_embeddings: bool = True,
    adapter_dropout: bool = True, attention_probs: bool = False, device: str = "cpu", private: bool = False,
) -> MemoryEstimate:
    """Bytes needed to train an adapter of `adapter_params` on a frozen base of `base_params`.

    `intermediate` is the MLP width (default 4 x hidden), `kv_heads` the key/value heads (default `heads`),
    `attention_probs` whether attention keeps its seq^2 probabilities (eager attention), `device` "cpu"
    (process RSS, with the allocator term) or "cuda", `private` whether DP-SGD keeps per-example gradients.
    """
    kv = hidden * (kv_heads or heads) // heads
    ffn = intermediate or 4 * hidden
    act_bytes = 2.0 if compute in ("bf16", "fp16") else 4.0
    tokens = batch * seq_len

    embedding_params = vocab * hidden * (1 if tied_embeddings else 2)
    if weight_format == "nf4":
        weights = (base_params - embedding_params) * BYTES_PER_PARAM["nf4"] + embedding_params * LOAD_BYTES
        if device == "cpu":
            weights += base_params * LOAD_BYTES  # the memory-mapped checkpoint stays resident
    elif weight_format == "bf16" and device == "cpu":
        weights = base_params * LOAD_BYTES  # measured: as resident as an fp32 base (see the module docstring)
    else:
        weights = base_params * BYTES_PER_PARAM[weight_format]

    base_layer = 4 * hidden + 2 * kv + 3 * ffn
    adapter_layer = 2 * (6 * hidden + ffn) if adapter_dropout else 3 * hidden + ffn
    per_layer = (base_layer + adapter_layer) * tokens * act_bytes
    if attention_probs:  # the fp32 softmax output backward needs, and its 16-bit copy the next matmul takes
        per_layer += heads * seq_len**2 * batch * (4.0 + (act_bytes if act_bytes < 4 else 0.0))
    ends = 3 * hidden * tokens * act_bytes  # embedding output, final norm input and output
    if gradient_checkpointing:
        activations = layers * hidden * tokens * act_bytes + per_layer + ends
    else:
        activations = layers * per_layer + ends

    logits = tokens * vocab * (3 * 4.0 + (act_bytes if act_bytes < 4 else 0.0))
    allocator = 0.0
    if device == "cpu":
        allocator = CPU_RUNTIME + CPU_HEAP_RETENTION[gradient_checkpointing] * layers * per_layer
    return MemoryEstimate(
        weights=weights,
        adapter=adapter_params * 4.0,  # adapters train in fp32 master weights
        optimizer=adapter_params * 8.0,  # AdamW: two fp32 moments
        gradients=adapter_params * 4.0,
        activations=activations,
        logits=logits,
        allocator=allocator,
        per_sample_gradients=(batch + 2) * adapter_params * 4.0 if private else 0.0,
    )
