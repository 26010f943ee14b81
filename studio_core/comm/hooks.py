"""Rand-K and Top-K (error feedback) compression of the gradients DDP exchanges, as DDP communication hooks.

A hook gets one bucket of flattened gradients per backward pass that DDP synchronises (under the Trainer these are
only the adapter's: frozen parameters have no gradient, so DDP leaves them out) and returns a future of the
averaged bucket. Both hooks send k = ceil(ratio x d) entries of a bucket of d:

- Rand-K: the k positions come from a generator seeded by (seed, step, bucket), the same on every rank, so only the
  k values travel (one all-reduce of k floats); each rank scales its share by d/k, which makes the estimate
  unbiased: E[d/k x mask * g] = g.
- Top-K: each rank picks its k largest |g + residual| entries; indices differ between ranks, so (index, value)
  pairs are all-gathered and summed into the dense average. What a rank did not send stays in its residual and is
  added to its next gradient (error feedback: nothing is dropped, only delayed).

Bytes sent are counted per rank as the payload it hands to the collective (k x 4 for Rand-K, k x 8 for Top-K,
d x element size for a dense all-reduce), against the dense payload, and read per logged step by `take()`.
"""

import math  # no `from __future__ import annotations`: DDP checks the hooks' return annotation at run time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist


def keep_count(d: int, ratio: float) -> int:
    """k for a bucket of d entries: at least one, at most d."""
    return max(1, min(d, math.ceil(ratio * d)))


def shared_indices(d: int, k: int, seed: int, step: int, bucket: int) -> torch.Tensor:
    """Rand-K's k positions of a bucket: a function of (seed, step, bucket) only, so every rank draws the same."""
    generator = torch.Generator().manual_seed((seed * 1_000_003 + step * 10_007 + bucket) % (2**63 - 1))
    return torch.randperm(d, generator=generator)[:k]


def randk_compress(grad: torch.Tensor, k: int, seed: int, step: int, bucket: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, values x d/k): the unbiased Rand-K estimate of `grad` as sparse entries."""
    d = grad.numel()
    index = shared_indices(d, k, seed, step, bucket).to(grad.device)
    return index, grad.reshape(-1)[index] * (d / k)


def topk_compress(accumulated: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(indices, values, residual): the k largest-magnitude entries and what is left for the next step."""
    flat = accumulated.reshape(-1)
    index = flat.abs().topk(k, sorted=False).indices
    values = flat[index]
    residual = flat.clone()
    residual[index] = 0
    return index, values, residual


@dataclass
class CommState:
    """A hook's settings and what it has sent; one per training process."""

    method: str
    ratio: float
    seed: int = 0
    process_group: Any = None
    step: int = 0  # backward passes synchronised so far (the bucket marked last ends one)
    residuals: dict[int, torch.Tensor] = field(default_factory=dict)
    sent_bytes: int = 0
    dense_bytes: int = 0
    steps_counted: int = 0

    def count(self, sent: int, dense: int, last: bool) -> None:
        self.sent_bytes += sent
        self.dense_bytes += dense
        if last:
            self.step += 1
            self.steps_counted += 1

    def take(self) -> dict[str, Any]:
        """Bytes sent per synchronised step since the last call (the training metric line's fields)."""
        steps = max(1, self.steps_counted)
        sent, dense = self.sent_bytes / steps, self.dense_bytes / steps
        self.sent_bytes = self.dense_bytes = self.steps_counted = 0
        if not sent:
            return {}
        return {"comm_bytes": int(sent), "comm_dense_bytes": int(dense), "comm_compression": round(dense / sent, 2)}


def _world(state: CommState) -> int:
    return dist.get_world_size(state.process_group)


def randk_hook(state: CommState, bucket) -> torch.futures.Future[torch.Tensor]:
    """DDP hook: Rand-K with indices shared by seed; one all-reduce of k values."""
    grad = bucket.buffer()
    d = grad.numel()
    k = keep_count(d, state.ratio)
    index, values = randk_compress(grad, k, state.seed, state.step, bucket.index())
    state.count(values.numel() * values.element_size(), d * grad.element_size(), bucket.is_last())
    world = _world(state)
    future = dist.all_reduce(values.contiguous(), group=state.process_group, async_op=True).get_future()

    def unpack(fut):
        summed = fut.value()[0]
        grad.zero_()
        grad.view(-1)[index] = summed / world
        return grad

    return future.then(unpack)


def topk_hook(state: CommState, bucket) -> torch.futures.Future[torch.Tensor]:
    """DDP hook: Top-K with error feedback; (index, value) pairs all-gathered and summed."""
    grad = bucket.buffer()
    d = grad.numel()
    k = keep_count(d, state.ratio)
    key = bucket.index()
    residual = state.residuals.get(key)
    if residual is not None and residual.numel() != d:  # DDP rebuilt its buckets after the first step
        residual = None
    accumulated = grad.reshape(-1) + residual if residual is not None else grad.reshape(-1)
    index, values, state.residuals[key] = topk_compress(accumulated, k)
    # One message per rank: int32 indices bit-cast to float32 beside the values (gloo and nccl just move bytes).
    packed = torch.cat([index.to(torch.int32).view(torch.float32), values.to(torch.float32)])
    state.count(packed.numel() * 4, d * grad.element_size(), bucket.is_last())
    world = _world(state)
    gathered = [torch.empty_like(packed) for _ in range(world)]
    future = dist.all_gather(gathered, packed, group=state.process_group, async_op=True).get_future()

    def unpack(fut):
        dense = torch.zeros(d, dtype=torch.float32, device=grad.device)
        for part in gathered:
            dense.index_add_(0, part[:k].view(torch.int32).long(), part[k:])
        grad.copy_((dense / world).view_as(grad).to(grad.dtype))
        return grad

    return future.then(unpack)


HOOKS = {"randk": randk_hook, "topk": topk_hook}


class CountingState:
    """Byte counting around PyTorch's own hooks (the benchmark's baselines): dense fp32, fp16, PowerSGD."""

    def __init__(self, kind: str, inner: Any = None):
        self.kind, self.inner = kind, inner
        self.sent_bytes = self.dense_bytes = self.steps_counted = 0

    take = CommState.take


def counting_hook(state: CountingState, bucket) -> torch.futures.Future[torch.Tensor]:
    """Run PyTorch's built-in hook named by `state.kind`, counting the payload it sends."""
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook

    grad = bucket.buffer()
    dense = grad.numel() * grad.element_size()
    if state.kind == "fp16":
        sent, future = grad.numel() * 2, default_hooks.fp16_compress_hook(state.inner, bucket)
    elif state.kind == "powersgd":
        sent, future = _powersgd_bytes(state.inner, bucket), powerSGD_hook.powerSGD_hook(state.inner, bucket)
    else:
        sent, future = dense, default_hooks.allreduce_hook(state.inner, bucket)
    state.sent_bytes += sent
    state.dense_bytes += dense
    state.steps_counted += int(bucket.is_last())
    return future


def _powersgd_bytes(ps_state, bucket) -> int:
    """What PowerSGD all-reduces for this bucket: dense until `start_powerSGD_iter`, then the P and Q factors of
    each compressed matrix plus the tensors it leaves uncompressed (its own `_should_compress` rule)."""
    from torch.distributed.algorithms.ddp_comm_hooks.powerSGD_hook import _should_compress

    grad = bucket.buffer()
    if ps_state.iter < ps_state.start_powerSGD_iter:
        return grad.numel() * grad.element_size()
    total = 0
    for tensor in bucket.gradients():
        matrix = tensor.view(tensor.shape[0], -1) if tensor.ndim > 1 else None
        if matrix is None:
            total += tensor.numel() * 4
            continue
        n, m = matrix.shape
        rank = min(n, m, ps_state.matrix_approximation_rank)
        compress, uncompressed, compressed = _should_compress(n, m, rank, ps_state.min_compression_rate)
        total += compressed * 4 if compress else uncompressed * 4
    return total
