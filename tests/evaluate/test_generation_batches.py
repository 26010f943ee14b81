"""Step 8's generation batches: at most `evaluation.batch_size` prompts and a bounded number of prompt tokens."""

from studio_core.config import validate_config
from studio_core.evaluate import basic
from studio_core.evaluate.basic import GENERATION_BATCH_TOKENS, generation_batches


def test_batches_cover_every_prompt_once_in_order():
    batches = list(generation_batches([120] * 70, 32))
    assert batches == [(0, 32), (32, 64), (64, 70)]


def test_long_prompts_go_in_smaller_batches_and_an_overlong_one_alone():
    assert GENERATION_BATCH_TOKENS == 8192
    # 3 x 3000 tokens would exceed 8192: two a batch; a short prompt joins the next long one
    assert list(generation_batches([3000, 3000, 3000, 100], 32)) == [(0, 2), (2, 4)]
    assert list(generation_batches([9000, 10, 10], 32)) == [(0, 1), (1, 3)]
    assert list(generation_batches([], 32)) == []
    lengths = [50, 400, 2000, 7000, 30, 30, 8000, 1]
    batches = list(generation_batches(lengths, 4))
    assert [i for s, e in batches for i in range(s, e)] == list(range(len(lengths)))
    for s, e in batches:
        assert e - s <= 4 and ((e - s) * max(lengths[s:e]) <= 8192 or e - s == 1)


def test_the_evaluation_batch_size_reaches_generation(monkeypatch):
    cfg = validate_config({"evaluation": {"batch_size": 5}})
    assert validate_config({}).evaluation.batch_size == 32
    seen = []
    monkeypatch.setattr(basic, "generate", lambda *a, batch_size, **k: seen.append(batch_size) or [])
    import torch

    basic.measure_model(torch.nn.Linear(1, 1), None, [], [], cfg, "fp32")  # no split: the user prompts only
    assert seen == [5]
