"""DP-SGD's arithmetic on a tiny Llama in fp32: per-example gradients against brute force (opacus#820 reports
wrong LoRA gradients with peft), and noise 0 with a huge clip against non-private training on the same batches."""

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model

from studio_core.data.tokenize import IGNORE_INDEX, TokenizedExample
from studio_core.models.tiny import _family_config, build_random_model
from studio_core.privacy.accounting import PrivacyPlan
from studio_core.privacy.engine import PrivateSGD, per_example_loss
from studio_core.train.batching import Collator


def tiny_peft(dora: bool = False):
    model = build_random_model(_family_config("llama", 300), seed=1)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0, use_dora=dora)
    peft_model = get_peft_model(model, config)
    torch.manual_seed(2)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:  # zero at init: give lora_A a gradient too
            torch.nn.init.normal_(p, std=0.02)
    return peft_model


def examples(n: int = 12, seed: int = 3):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        length = 6 + int(torch.randint(0, 10, (1,), generator=gen))
        ids = torch.randint(5, 300, (length,), generator=gen).tolist()
        prompt = 2 + i % 3
        out.append(TokenizedExample(input_ids=ids, labels=[IGNORE_INDEX] * prompt + ids[prompt:],
                                    full_length=length))
    return out


def plan(n: int, batch: int, sigma: float = 1.0, clip: float = 1.0) -> PrivacyPlan:
    return PrivacyPlan(examples=n, logical_batch=batch, sample_rate=1 / -(-n // batch), steps=3, delta=1e-3,
                       noise_multiplier=sigma, max_grad_norm=clip, accountant="prv", target_epsilon=None,
                       noise_from_target=False, secure_mode=False, expected_epsilon=0.0)


def brute_force(model, batch, params):
    """One backward per example: the reference per-example gradients."""
    rows = []
    for i in range(batch["input_ids"].shape[0]):
        model.zero_grad()
        logits = model(input_ids=batch["input_ids"][i:i + 1], attention_mask=batch["attention_mask"][i:i + 1]).logits
        per_example_loss(logits, batch["labels"][i:i + 1])[0].backward()
        rows.append([p.grad.detach().clone() for p in params])
    return [torch.stack([r[k] for r in rows]) for k in range(len(params))]


@pytest.mark.parametrize("dora,mode", [(False, "hooks"), (True, "per_example")])
@pytest.mark.parametrize("answer_logits", [False, True], ids=["full-logits", "answer-logits"])
def test_per_example_gradients_equal_one_backward_per_example(dora, mode, answer_logits):
    """Also with the training collator's answer-only logits (`logits_to_keep`): the same losses and gradients."""
    torch.manual_seed(0)
    model, data = tiny_peft(dora), examples(8)
    twin = copy.deepcopy(model)  # the same weights, without Opacus' hooks
    collate = Collator(0, answer_logits)
    sgd = PrivateSGD(model, torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1), data,
                     collate, plan(len(data), 4), mode)
    batch = collate(data[:4])  # padded rows of different lengths and prompt masks
    assert ("logits_to_keep" in batch) is answer_logits
    loss_sum, rows, _ = sgd.backward(batch)
    with torch.no_grad():  # the reference losses: full logits, one row at a time
        want = sum(float(per_example_loss(twin(input_ids=batch["input_ids"][i:i + 1],
                                               attention_mask=batch["attention_mask"][i:i + 1]).logits,
                                          batch["labels"][i:i + 1])[0]) for i in range(4))
    assert rows == 4 and loss_sum == pytest.approx(want, rel=1e-5)
    names = {id(p): n for n, p in model.named_parameters()}
    params = sgd.optimizer.params
    assert any("lora_A" in names[id(p)] for p in params) and any("lora_B" in names[id(p)] for p in params)
    if dora:
        assert any("lora_magnitude_vector" in names[id(p)] for p in params)
    opacus = [p.grad_sample.detach().clone() for p in params]
    twin_params = dict(twin.named_parameters())
    reference = brute_force(twin, batch, [twin_params[names[id(p)]] for p in params])
    for p, got, want in zip(params, opacus, reference):
        assert got.shape == want.shape == (4, *p.shape)
        assert want.abs().max() > 1e-6, names[id(p)]  # a real gradient, not two zeros agreeing
        assert (got - want).abs().max().item() < 1e-5, names[id(p)]


def test_no_noise_and_a_huge_clip_match_non_private_training_on_the_same_batches():
    torch.manual_seed(0)
    private, data = tiny_peft(), examples(12)
    public = copy.deepcopy(private)
    collate, batch_size = Collator(pad_id=0), 4
    train = [p for p in private.parameters() if p.requires_grad]
    sgd = PrivateSGD(private, torch.optim.SGD(train, lr=0.5), data, collate,
                     plan(len(data), batch_size, sigma=0.0, clip=1e6), "hooks")
    from opacus.utils.batch_memory_manager import BatchMemoryManager

    logical: list[list[int]] = [[]]
    with BatchMemoryManager(data_loader=sgd.loader, max_physical_batch_size=2, optimizer=sgd.optimizer) as loader:
        for batch in loader:  # one epoch: 3 Poisson logical batches, split into physical batches of at most 2
            before = sgd.steps_taken
            sgd.backward(batch)
            if isinstance(batch, dict):
                logical[-1] += batch["index"].tolist()
            sgd.optimizer.step()
            sgd.optimizer.zero_grad()
            if sgd.steps_taken > before:
                logical.append([])
    logical.pop()
    assert len(logical) == 3 and any(len(b) > 2 for b in logical)  # accumulation across physical batches happened
    params = [p for p in public.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.5)
    for indices in logical:  # the same examples, averaged over the expected batch as DP-SGD does
        optimizer.zero_grad()
        if indices:
            batch = collate([data[i] for i in indices])
            logits = public(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            (per_example_loss(logits, batch["labels"]).sum() / batch_size).backward()
            optimizer.step()
    moved = max((a - b).abs().max().item() for a, b in zip(train, [p.detach() for p in tiny_peft().parameters()
                                                                    if p.requires_grad]))
    assert moved > 1e-4  # training changed the adapter
    for a, b in zip(train, params):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)
