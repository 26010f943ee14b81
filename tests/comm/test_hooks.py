"""Rand-K is unbiased, Top-K carries what it did not send to the next step, and both run as DDP hooks."""

import socket

import pytest
import torch
import torch.distributed as dist

from studio_core.comm.hooks import (
    CommState,
    keep_count,
    randk_compress,
    randk_hook,
    shared_indices,
    topk_compress,
    topk_hook,
)


def test_randk_is_unbiased_mean_over_seeds_equals_the_dense_gradient():
    torch.manual_seed(0)
    grad = torch.randn(200)
    k = keep_count(200, 0.1)
    trials = 4000
    mean = torch.zeros(200)
    for seed in range(trials):
        index, values = randk_compress(grad, k, seed, step=0, bucket=0)
        mean[index] += values / trials
    # each entry is kept with probability k/d, scaled d/k: its mean's standard error is |g| sqrt((d/k - 1)/trials)
    bound = 5 * grad.abs() * ((200 / k - 1) / trials) ** 0.5 + 1e-6
    assert ((mean - grad).abs() <= bound).all()
    assert float((mean - grad).norm() / grad.norm()) < 0.1


def test_randk_indices_depend_on_seed_step_and_bucket_only():
    a = shared_indices(1000, 10, seed=3, step=7, bucket=1)
    assert torch.equal(a, shared_indices(1000, 10, seed=3, step=7, bucket=1))  # what every rank draws
    assert not torch.equal(a, shared_indices(1000, 10, seed=3, step=8, bucket=1))
    assert not torch.equal(a, shared_indices(1000, 10, seed=3, step=7, bucket=2))
    assert len(set(a.tolist())) == 10


def test_topk_error_feedback_carries_the_residual_to_the_next_step():
    g1, g2 = torch.tensor([5.0, -0.5, 0.2, -3.0]), torch.tensor([0.1, 0.4, 0.1, 0.1])
    index, values, residual = topk_compress(g1, 2)
    assert sorted(index.tolist()) == [0, 3] and torch.equal(residual, torch.tensor([0.0, -0.5, 0.2, 0.0]))
    index2, values2, residual2 = topk_compress(g2 + residual, 2)
    assert sorted(index2.tolist()) == [2, 3]  # -0.5 + 0.4 = -0.1 is small now; 0.2 + 0.1 = 0.3 was carried
    sent = torch.zeros(4)
    sent[index] += values
    sent[index2] += values2
    assert torch.allclose(sent + residual2, g1 + g2)  # nothing lost: sent plus what is still held back


class Bucket:
    def __init__(self, tensor, index=0, last=True):
        self.tensor, self._index, self._last = tensor, index, last

    def buffer(self):
        return self.tensor

    def index(self):
        return self._index

    def is_last(self):
        return self._last


@pytest.fixture(scope="module")
def one_rank_group():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_hooks_send_k_entries_and_count_their_bytes(one_rank_group):
    torch.manual_seed(1)
    grad = torch.randn(1000)
    state = CommState("topk", 0.1)
    out = topk_hook(state, Bucket(grad.clone())).wait()
    kept = out != 0
    assert int(kept.sum()) == 100 and torch.equal(out[kept], grad[kept])
    assert float(grad[~kept].abs().max()) <= float(grad[kept].abs().min())
    assert torch.allclose(state.residuals[0], torch.where(kept, 0.0, grad))
    assert state.take() == {"comm_bytes": 800, "comm_dense_bytes": 4000, "comm_compression": 5.0}

    state = CommState("randk", 0.1, seed=5)
    out = randk_hook(state, Bucket(grad.clone())).wait()
    index = shared_indices(1000, 100, 5, 0, 0)
    assert torch.allclose(out[index], grad[index] * 10) and int((out != 0).sum()) == 100
    assert state.step == 1 and state.take()["comm_bytes"] == 400


def test_a_collective_broken_by_a_killed_peer_is_told_from_a_failure_of_the_rank_itself():
    from studio_core.train.distributed import is_peer_lost

    gloo = RuntimeError("[third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:45472: Connection "
                        "reset by peer. This is typically caused by a remote worker hanging")
    assert is_peer_lost(gloo)
    assert not is_peer_lost(ValueError("Communication hook: return annotation should be torch.futures.Future"))
