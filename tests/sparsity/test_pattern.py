"""The 2:4 pattern: masks keep exactly the 2 largest of every 4, the checker counts violating groups, and the
compressed storage round-trips exactly at under 0.57x of dense at 16 bits."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from studio_core.sparsity.pattern import mask_from_scores, violations, wanda_scores
from studio_core.sparsity.storage import compress, decompress, load_compressed, save_compressed

finite = st.floats(-1e4, 1e4, allow_nan=False, width=32)
shapes = st.tuples(st.integers(1, 6), st.integers(1, 6).map(lambda g: 4 * g))


@settings(max_examples=200, deadline=None)
@given(shapes.flatmap(lambda s: arrays("float32", s, elements=finite)))
def test_mask_keeps_exactly_two_of_four_and_the_largest(values):
    weight = torch.from_numpy(values)
    mask = mask_from_scores(weight.abs())
    groups, kept = weight.abs().reshape(weight.shape[0], -1, 4), mask.reshape(weight.shape[0], -1, 4)
    assert (kept.sum(-1) == 2).all()
    smallest_kept = torch.where(kept, groups, torch.inf).amin(-1)
    largest_dropped = torch.where(~kept, groups, -torch.inf).amax(-1)
    assert (smallest_kept >= largest_dropped).all()
    assert violations(weight * mask) == 0


def test_checker_counts_each_group_with_more_than_two_nonzeros():
    weight = torch.tensor([[1.0, 2.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]])
    assert violations(weight) == 2
    weight[0, 6] = 0.0
    assert violations(weight) == 1


def test_wanda_prefers_weights_on_loud_inputs():
    weight = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    norms = torch.tensor([10.0, 10.0, 0.1, 0.1])
    assert mask_from_scores(weight.abs()).tolist() == [[False, False, True, True]]
    assert mask_from_scores(wanda_scores(weight, norms)).tolist() == [[True, True, False, False]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_compressed_round_trip_is_exact(dtype):
    torch.manual_seed(0)
    weight = torch.randn(16, 40)
    weight = (weight * mask_from_scores(weight.abs())).to(dtype)
    weight[0, :4] = torch.tensor([0.0, 0.0, 0.0, 5.0])  # fewer than 2 non-zeros: zeros fill the unused slot
    weight[1, :4] = 0.0
    values, positions = compress(weight)
    assert values.shape == (16, 20) and positions.dtype == torch.uint8 and positions.shape == (16, 5)
    assert torch.equal(decompress(values, positions, tuple(weight.shape)), weight)


def test_compressed_file_round_trip_and_size(tmp_path):
    torch.manual_seed(1)
    weight = torch.randn(64, 128)
    state = {"a.weight": weight * mask_from_scores(weight.abs()), "norm.weight": torch.randn(64)}
    report = save_compressed(state, ["a.weight"], tmp_path / "m.safetensors")
    back = load_compressed(tmp_path / "m.safetensors")
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
    assert report["ratio_16bit"] <= 0.57 and report["ratio"] <= 0.54
    assert report["compressed_bytes_16bit"] == 64 * 64 * 2 + 64 * 128 // 8


def test_compress_refuses_a_tensor_that_is_not_two_four():
    weight = torch.ones(2, 8)
    with pytest.raises(ValueError, match="4 group"):
        compress(weight)
