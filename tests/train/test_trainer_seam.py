"""The one trainer seam: what a feature attaches through TrainerParts reaches the Trainer and the run dir."""

from transformers import TrainerCallback

from studio_core import stages, workflow
from studio_core.train.batching import Collator
from studio_core.train.trainer import TrainerParts
from tests.train.test_training import tiny_config


def test_callbacks_collator_wrappers_metric_fields_and_comm_hook_all_plug_in(tmp_path, monkeypatch):
    seen = {"callback_steps": 0, "collated": 0, "wrapped": None}

    class Counting(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            seen["callback_steps"] += 1

    class CountingCollator(Collator):
        def __call__(self, examples):
            seen["collated"] += 1
            return super().__call__(examples)

    def wrap(trainer):
        seen["wrapped"] = type(trainer).__name__
        return trainer

    def comm_hook(state, bucket):  # never called with one process: there is no DDP model
        raise AssertionError("a single process has no gradient exchange")

    def parts(ctx):
        return TrainerParts(callbacks=[Counting()], collator=CountingCollator(ctx.tokenizer().pad_token_id),
                            wrap=[wrap], comm_hook=(None, comm_hook),
                            metric_fields=[lambda state: {"feature_step": state.global_step * 10}])

    monkeypatch.setattr(stages, "trainer_parts", parts)
    run = workflow.run(tiny_config(max_steps=4, eval_steps=2, save_steps=2), tmp_path)
    assert seen["callback_steps"] == 4 and seen["wrapped"] == "Trainer"
    assert seen["collated"] >= 4  # every training batch (and the evaluations) went through the attached collator
    train_lines = [m for m in run.metrics() if "loss" in m]
    assert [m["feature_step"] for m in train_lines] == [10, 20, 30, 40]
    assert any("communication hook was not used" in e["message"] for e in run.events() if e["type"] == "warning")


def test_parts_of_several_features_join_and_two_collators_are_refused():
    import pytest

    first = TrainerParts(callbacks=["a"], metric_fields=[len], collator=object())
    joined = TrainerParts().add(first).add(None).add(TrainerParts(callbacks=["b"], wrap=[id]))
    assert joined.callbacks == ["a", "b"] and joined.wrap == [id] and joined.collator is first.collator
    with pytest.raises(ValueError, match="collator"):
        joined.add(TrainerParts(collator=object()))
