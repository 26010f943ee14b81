"""DP-SGD on several processes (gloo on this CPU): each rank Poisson-samples its own shard from its own stream and
keeps empty draws, the noise is added once for the whole batch, and a two-process run's epsilon is the one
Opacus' accountant gives for the global sample rate."""

import json
import os

import pytest
import torch
import torch.multiprocessing as mp

from studio_core import workflow
from studio_core.config import validate_config
from studio_core.privacy.engine import PrivateSGD
from studio_core.train.batching import collate
from tests.privacy.test_gradients import examples, plan
from tests.privacy.test_private_run import check_private_run, private_config
from tests.train.test_distributed import free_port

ROWS, BATCH, DRAWS = 24, 8, 400  # global expected batch 8 (4 per rank): q = 1/3
SIGMA, CLIP = 1.0, 1e-6  # a clip this small leaves noise alone in the gradient: its spread is measurable


def _rank(rank: int, port: int, out: str) -> None:
    from tests.train.test_answer_logits import _lora

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)  # the same seed on both ranks, as the Trainer's set_seed leaves them
        model = _lora()
        params = [p for p in model.parameters() if p.requires_grad]
        sgd = PrivateSGD(model, torch.optim.SGD(params, lr=0.0), examples(ROWS), lambda rows: collate(rows, 0),
                         plan(ROWS, BATCH, sigma=SIGMA, clip=CLIP), "hooks", stream="test")
        sampler = sgd.loader.batch_sampler
        sampler.steps = DRAWS
        draws = [batch["index"].tolist() for batch in sgd.loader]
        batch = next(b for b in sgd.loader if len(b["index"]))
        sgd.backward(batch)
        sgd.optimizer.step()  # clip, noise (rank 0 only), scale, all-reduce; lr 0 leaves the weights
        grads = torch.cat([p.grad.flatten() for p in params])
        torch.save({"draws": draws, "grads": grads}, f"{out}/rank-{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ranks")
    mp.spawn(_rank, args=(free_port(), str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank-{r}.pt") for r in (0, 1)]


def test_each_rank_draws_its_own_shard_independently_and_keeps_empty_draws(ranks):
    draws = [r["draws"] for r in ranks]
    assert [len(d) for d in draws] == [DRAWS, DRAWS]  # an empty draw is a step too: the ranks stay in step
    assert any(not d for d in draws[0]) and any(not d for d in draws[1])  # (0.67^12 ~ 1% of draws are empty)
    for rank, rank_draws in enumerate(draws):
        assert all(i % 2 == rank for step in rank_draws for i in step)  # rank r holds rows r, r+2, ...
    # Not the same positions of each shard at each step (the global RNG, seeded alike, would give exactly that).
    positions = [[sorted(i // 2 for i in step) for step in d] for d in draws]
    assert sum(a == b for a, b in zip(*positions)) < DRAWS / 10
    # Every row joins a step with probability q = 1/3: 400 draws, about 133 each (binomial sd 9.4).
    counts = torch.bincount(torch.tensor([i for d in draws for step in d for i in step]), minlength=ROWS)
    assert counts.shape == (ROWS,) and int(counts.min()) > 133 - 45 and int(counts.max()) < 133 + 45


def test_the_noise_is_added_once_for_the_global_batch(ranks):
    grads = [r["grads"] for r in ranks]
    assert torch.equal(grads[0], grads[1])  # the all-reduced gradient: the same step on every rank
    # Noise N(0, (sigma C)^2) on the sum, over the expected global batch of 8: sd sigma C / 8. Noise from both ranks
    # would give sqrt(2) times that; noise over the per-rank batch, twice that.
    ratio = float(grads[0].std()) / (SIGMA * CLIP / BATCH)
    print(f"gradient sd / (sigma C / global batch) = {ratio:.3f} over {grads[0].numel()} weights")
    assert 0.9 < ratio < 1.1


def test_a_two_process_private_run_accounts_for_the_global_sample_rate(tmp_path):
    data = private_config(target_epsilon=6.0).model_dump(mode="json")
    data["training"].update(nproc=2, per_device_batch_size=1)  # logical batch 1 x 2 processes: as check_private_run
    run = workflow.run(validate_config(data), tmp_path)
    check_private_run(run)
    report = json.loads((run.artifacts / "privacy.json").read_text())
    assert report["processes"] == 2 and report["logical_batch"] == 2 and report["physical_batch"] == 1
