"""The 2:4 pattern itself: masks from scores, the violation count, and the two scores (magnitude, Wanda).

A linear layer's weight is `[out_features, in_features]`; its groups are 4 consecutive weights along the input
dimension (what NVIDIA's sparse tensor cores and `torch.sparse.to_sparse_semi_structured` expect). A 2:4 mask
keeps the 2 highest-scoring weights of every group.
"""

from __future__ import annotations

import torch

GROUP, KEEP = 4, 2


def check_shape(name: str, weight: torch.Tensor) -> None:
    """A 2:4 pattern needs a 2-D weight whose input dimension is a multiple of 4."""
    if weight.ndim != 2 or weight.shape[1] % GROUP:
        raise ValueError(f"{name}: weight of shape {tuple(weight.shape)} cannot hold a 2:4 pattern (its input "
                         f"dimension must be a multiple of {GROUP}); leave it out of pruning.targets")


def mask_from_scores(scores: torch.Tensor) -> torch.Tensor:
    """Boolean mask of `scores`' shape keeping the 2 largest of every 4 along the last dimension.

    Ties keep the lower index (a stable sort), so the mask is a function of the scores alone.
    """
    out, width = scores.shape
    groups = scores.detach().float().reshape(out, width // GROUP, GROUP)
    keep = torch.argsort(groups, dim=-1, descending=True, stable=True)[..., :KEEP]
    mask = torch.zeros_like(groups, dtype=torch.bool)
    mask.scatter_(-1, keep, True)
    return mask.reshape(out, width)


def magnitude_scores(weight: torch.Tensor) -> torch.Tensor:
    return weight.detach().float().abs()


def wanda_scores(weight: torch.Tensor, input_norm: torch.Tensor) -> torch.Tensor:
    """|W_ij| * ||X_j||_2: Wanda's score (Sun et al. 2023), the input feature's L2 norm over calibration tokens."""
    return weight.detach().float().abs() * input_norm.float().reshape(1, -1)


def violations(weight: torch.Tensor) -> int:
    """Groups of 4 consecutive weights along the input dimension holding more than 2 non-zeros."""
    out, width = weight.shape
    nonzero = (weight.detach().reshape(out, width // GROUP, GROUP) != 0).sum(-1)
    return int((nonzero > KEEP).sum())


def sparsity(weight: torch.Tensor) -> float:
    """Fraction of exact zeros."""
    return float((weight.detach() == 0).sum()) / weight.numel()
