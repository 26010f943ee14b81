"""The label loss (training.label_words): each row's label found where the logits predict it, a loss no shared
shift can lower, validation loss untouched, refusals that name the field."""

import re
import threading

import pytest
import torch

from studio_core import workflow
from studio_core.config import validate_config
from studio_core.data.tokenize import IGNORE_INDEX, TokenizedExample
from studio_core.errors import ConfigError
from studio_core.models.resolve import load_tokenizer, resolve_model
from studio_core.train.batching import Collator
from studio_core.train.labels import GroupedLabelSampler, LabelCollator, centred_label_loss, label_parts, label_tokens
from tests.train.test_training import tiny_config

WORDS = ["COMPLIANT", "NON-COMPLIANT"]


@pytest.fixture(scope="module")
def tok(model_cache):
    return load_tokenizer(resolve_model("tiny-random:llama", model_cache))


def example(tok, prompt: str, answer: str) -> TokenizedExample:
    p, a = tok(prompt, add_special_tokens=False)["input_ids"], tok(answer, add_special_tokens=False)["input_ids"]
    return TokenizedExample(p + a, [IGNORE_INDEX] * len(p) + a, len(p) + len(a))


@pytest.mark.parametrize("answer_logits_only", [True, False])
def test_the_collator_points_at_the_logits_that_predict_each_rows_label(tok, answer_logits_only):
    tokens = label_tokens(tok, WORDS)
    rows = [example(tok, "Clause one.", "Verdict: NON-COMPLIANT\nReason: short."),
            example(tok, "A longer clause, two.", "Verdict: COMPLIANT\nReason: fine."),
            example(tok, "No label here.", "I cannot tell."),
            example(tok, "Three.", "Reason: first.\nVerdict: COMPLIANT")]
    batch = LabelCollator(Collator(tok.pad_token_id, answer_logits_only), tokens)(rows)
    assert batch["label_target"].tolist() == [1, 0, 0]  # the third row holds no label word and is left out
    chosen = batch["label_alternatives"].gather(1, batch["label_target"][:, None]).squeeze(1)
    # The token each pointed-at logits row must predict is the label's first token.
    if answer_logits_only:
        predicted = batch["shift_labels"][batch["label_index"]]
    else:
        predicted = batch["labels"].flatten()[batch["label_index"] + 1]
    assert predicted.tolist() == chosen.tolist()
    assert tok.decode(chosen[:1]).strip().startswith("N")  # NON-COMPLIANT parts from COMPLIANT at its first letter


def test_the_centred_loss_cannot_be_lowered_by_moving_every_rows_label_at_once():
    torch.manual_seed(0)
    logits = torch.randn(5, 7, 11)
    index, alternatives, target = torch.tensor([3, 9, 20, 33]), torch.tensor([[2, 5]] * 4), torch.tensor([0, 1, 1, 0])
    loss = centred_label_loss(logits, index, alternatives, target)
    shifted = logits.clone()
    shifted[..., 2] += 4.0  # every row's first label up by the same amount
    assert torch.allclose(centred_label_loss(shifted, index, alternatives, target), loss)
    # ... while telling the rows apart lowers it
    apart = logits.clone().reshape(-1, 11)
    for i, t in zip(index.tolist(), target.tolist()):
        apart[i, 2 if t == 0 else 5] += 3.0
    assert centred_label_loss(apart.reshape(5, 7, 11), index, alternatives, target) < loss / 4
    one = centred_label_loss(logits.requires_grad_(), index[:1], alternatives[:1], target[:1])
    one.backward()
    assert float(one) == 0.0 and float(logits.grad.abs().sum()) == 0.0  # one row has nothing to be compared with


def test_words_that_start_with_the_same_token_are_refused_naming_them(tok):
    with pytest.raises(ConfigError, match=r"training\.label_words: 'no' and 'no no' tokenize alike"):
        label_tokens(tok, ["no", "no no"])


@pytest.mark.parametrize(("extra", "field"), [
    ({"training": {"label_words": ["COMPLIANT"]}}, "needs two or more different"),
    ({"training": {"label_words": WORDS}, "privacy": {"enabled": True, "target_epsilon": 8}},
     "per-example clipping no longer bounds"),
    ({"training": {"label_words": WORDS, "per_device_batch_size": 1}}, "per_device_batch_size=1 gives it none"),
])
def test_a_single_label_word_a_batch_of_one_and_the_label_loss_under_privacy_are_refused(extra, field):
    with pytest.raises(ConfigError, match=field):
        validate_config(extra)


def test_a_run_with_label_words_counts_its_labels_trains_on_them_and_keeps_validation_loss_plain(tmp_path):
    def whole(cfg):  # the tiny model's character tokenizer: 576 tokens hold the demo's rows, verdict last
        return cfg.model_copy(update={"data": cfg.data.model_copy(update={"max_length": 576})})

    plain = workflow.run(whole(tiny_config(max_steps=2, eval_steps=2)), tmp_path / "plain")
    labelled = workflow.run(whole(tiny_config(max_steps=2, eval_steps=2, label_words=WORDS)), tmp_path / "labelled")
    event = next(e for e in labelled.events() if e["type"] == "label_loss")
    counts = event["label_rows"]
    labelled_rows = counts["COMPLIANT"] + counts["NON-COMPLIANT"]
    assert counts["COMPLIANT"] > 10 and counts["NON-COMPLIANT"] > 10  # the tiny model's character tokenizer cuts a
    assert counts["(none)"] < labelled_rows / 10  # few answers off before their verdict: counted, not hidden
    assert f"on {labelled_rows} of {labelled_rows + counts['(none)']} training rows" in event["message"]
    first = [[m for m in r.metrics() if "val_loss" in m][0]["val_loss"] for r in (plain, labelled)]
    assert first[0] == first[1]  # step 0's validation: the same model, the same plain loss
    losses = [[m["loss"] for m in r.metrics() if "loss" in m] for r in (plain, labelled)]
    assert losses[1][0] > losses[0][0]  # the label term is in the training loss (same model at step 1)


def test_label_words_no_answer_holds_are_refused_naming_the_field(tmp_path):
    with pytest.raises(workflow.StageFailed, match=r"training\.label_words: none of the \d+ training rows"):
        workflow.run(tiny_config(max_steps=1, eval_steps=1, save_steps=1, label_words=["sunny", "rainy"]),
                     tmp_path)


GROUP = "Policy rule: (.*)"


def test_centred_within_groups_a_shift_of_one_groups_label_changes_nothing_that_the_batch_centring_would_learn():
    torch.manual_seed(0)
    logits = torch.randn(4, 5, 11)
    index, alternatives = torch.tensor([1, 6, 12, 18]), torch.tensor([[2, 5]] * 4)
    target, group = torch.tensor([0, 1, 0, 1]), torch.tensor([7, 7, 3, 3])  # two groups, one row of each label
    shifted = logits.clone().reshape(-1, 11)
    shifted[index[:2], 2] += 4.0  # group 7's rows both lean to the first label: a group offset, not a decision
    shifted = shifted.reshape(4, 5, 11)
    within = [centred_label_loss(x, index, alternatives, target, group) for x in (logits, shifted)]
    across = [centred_label_loss(x, index, alternatives, target) for x in (logits, shifted)]
    assert torch.allclose(within[0], within[1])  # within each group the offset cancels
    assert not torch.allclose(across[0], across[1])  # over the whole batch it moves the loss: something to learn
    # For two words it is the paired margin loss of bench/demo_readout.py: BCE on the margin centred per pair.
    chosen = logits.reshape(-1, 11)[index].gather(1, alternatives)
    margin = chosen[:, 1] - chosen[:, 0]
    paired = margin - margin.view(-1, 2).mean(1).repeat_interleave(2)
    assert torch.allclose(within[0], torch.nn.functional.binary_cross_entropy_with_logits(paired, target.float()))
    alone = torch.tensor([1, 2, 3, 4])  # every row alone in its group: nothing to compare, no loss
    assert float(centred_label_loss(logits, index, alternatives, target, alone)) == 0.0


def test_the_grouped_sampler_lays_whole_tuples_end_to_end_draws_every_row_and_replays_an_epoch():
    members = {"a": [[0, 1, 2], [3]], "b": [[4], [5, 6]], "c": [[7, 8], [9, 10]]}
    sampler = GroupedLabelSampler(members, seed=3)
    label = {i: k for rows in members.values() for k, idx in enumerate(rows) for i in idx}
    group = {i: g for g, rows in members.items() for idx in rows for i in idx}
    order = list(sampler)
    assert len(order) == len(sampler) == 2 * 3 + 2 * 2 + 2 * 2
    assert set(order) == set(range(11))  # every row at least once an epoch; the short labels' rows repeat
    for i in range(0, len(order), 2):  # each consecutive pair: one group, one row of each label
        assert group[order[i]] == group[order[i + 1]] and {label[order[i]], label[order[i + 1]]} == {0, 1}
    assert list(sampler) == order  # the same epoch again: the same order (a resumed run replays it)
    sampler.set_epoch(1)
    assert list(sampler) != order


def test_a_label_group_needs_label_words_a_pattern_and_a_batch_of_whole_tuples():
    for training, message in [({"label_words": [], "label_group": GROUP}, "training.label_words is empty"),
                              ({"label_words": WORDS, "label_group": "Policy (rule"}, "not a regular expression"),
                              ({"label_words": WORDS, "label_group": GROUP, "per_device_batch_size": 5},
                               "not a multiple of 2; set it to 4 or 6")]:
        with pytest.raises(ConfigError, match=r"training\.label_group: .*" + re.escape(message)):
            validate_config({"training": training})


def test_every_pass_the_trainer_draws_pairs_rows_of_one_rule_one_of_each_verdict(tmp_path, tok, model_cache):
    from studio_core.data.demo import generate_legal_audit, rule_of
    from studio_core.data.load import load_records_as_conversations
    from studio_core.data.tokenize import tokenize_conversation
    from studio_core.models.resolve import load_model
    from studio_core.models.targets import default_target_modules
    from studio_core.train.adapters import apply_method
    from studio_core.train.trainer import StudioCallback, build_trainer

    cfg = tiny_config(label_words=WORDS, label_group=GROUP, per_device_batch_size=4)
    records = generate_legal_audit(160, seed=5, answer="verdict_first")  # the verdict inside 384 character tokens
    conversations = load_records_as_conversations(records, "alpaca").rows
    examples = [tokenize_conversation(tok, c, 384) for c in conversations]
    rules = {id(e): rule_of(r["instruction"]) for e, r in zip(examples, records)}
    events = []
    parts = label_parts(cfg.training, tok, lambda kind, message, **data: events.append((kind, message, data)))
    base = load_model(resolve_model("tiny-random:llama", model_cache))
    model = apply_method(base, cfg.method, default_target_modules(base))
    callback = StudioCallback(lambda *a, **k: None, lambda **k: None, threading.Event(), 6)
    trainer = build_trainer(cfg, model, examples, examples[:8], tok.pad_token_id, tmp_path, "fp32", callback, parts)
    (kind, message, data), = [e for e in events if e[0] == "label_loss"]
    assert "within 8 groups of training.label_group" in message and len(data["label_groups"]) == 8
    seen = 0
    for batch, _ in zip(trainer.get_train_dataloader(), range(10)):
        groups, targets = batch["label_group"].tolist(), batch["label_target"].tolist()
        assert len(groups) == 4 and sorted(targets) == [0, 0, 1, 1]
        for g in set(groups):  # each group of the pass holds as many rows of one verdict as of the other
            mine = [t for t, h in zip(targets, groups) if h == g]
            assert mine.count(0) == mine.count(1) > 0
        seen += 1
    assert seen == 10
    # the rows' groups are their rules: the pattern found what rule_of finds
    pairs = {(g, rules[i]) for i, g in trainer.data_collator.groups.items()}
    assert len(pairs) == len({g for g, _ in pairs}) == len({r for _, r in pairs}) == 8 and all(rules.values())


def test_a_label_group_no_row_matches_is_refused_naming_the_field(tmp_path):
    with pytest.raises(workflow.StageFailed, match=r"training\.label_group: no group of the \d+ training rows .*"
                                                   r"\d+ \(pattern does not match\)"):
        workflow.run(tiny_config(max_steps=1, eval_steps=1, save_steps=1, label_words=WORDS,
                                 label_group="Weather: (.*)"), tmp_path)
