"""Use-case presets set every training and method parameter; the rank follows the data, with its reasons."""

import pytest

from studio_core.config import RunConfig, TrainingConfig, validate_config
from studio_core.data.tokenize import TokenizedExample
from studio_core.train.presets import PRESETS, DataStats, apply_preset, data_stats, recommend_rank

MEDIUM = DataStats(train_rows=2000, supervised_tokens_per_row=60, distinct_answer_share=0.9)  # 120k tokens


@pytest.mark.parametrize("preset", list(PRESETS))
def test_a_preset_sets_every_training_parameter_and_the_whole_method(preset):
    start = RunConfig().model_dump(mode="json")
    start["training"].update(seed=7, precision="fp32", max_steps=999, learning_rate=0.3)
    large = DataStats(train_rows=20_000, supervised_tokens_per_row=60, distinct_answer_share=0.9)  # no step cap
    data, reasons = apply_preset(start, preset, large, hidden_size=576)
    config = validate_config(data)
    spec = PRESETS[preset]
    assert config.method.name == spec.method
    for key, value in spec.training.items():
        assert getattr(config.training, key) == value, key
    assert config.training.seed == 7 and config.training.precision == "fp32"  # the user's, not the recipe's
    # Where it runs (backend, processes, machines) is the user's, as are the seed and precision, not the recipe's.
    # The label words are the data's.
    own = {"enabled", "seed", "precision", "backend", "nproc", "nnodes", "rdzv_endpoint", "label_words",
           "label_loss_weight", "label_group"}
    untouched = set(TrainingConfig.model_fields) - set(spec.training) - own
    assert not untouched, f"the preset leaves {untouched} as they were"
    assert config.method.alpha == 2 * config.method.r
    assert reasons[0].startswith(spec.title) and any("passes over the 20,000 training rows" in r for r in reasons)


def test_a_preset_keeps_the_label_words_and_clears_them_where_it_trains_one_row_per_pass():
    start = RunConfig().model_dump(mode="json")
    start["training"].update(label_words=["COMPLIANT", "NON-COMPLIANT"], label_loss_weight=2.0,
                             label_group="Policy rule: (.*)")
    kept, reasons = apply_preset(start, "balanced", MEDIUM, 576)
    assert validate_config(kept).training.label_words == ["COMPLIANT", "NON-COMPLIANT"]
    assert validate_config(kept).training.label_group == "Policy rule: (.*)"  # 4 rows a pass: two whole pairs
    assert kept["training"]["label_loss_weight"] == 2.0 and not any("label words" in r for r in reasons)
    cleared, reasons = apply_preset(start, "low_memory", MEDIUM, 576)
    assert validate_config(cleared).training.label_words == [] and validate_config(cleared).training.label_group == ""
    assert any(r.startswith("label words cleared: Low memory trains one example per pass") for r in reasons)
    start["training"].update(label_words=["low", "mid", "high"])  # three words: 4 rows a pass split a triple
    regrouped, reasons = apply_preset(start, "balanced", MEDIUM, 576)
    assert validate_config(regrouped).training.label_group == ""
    assert any(r.startswith("label group cleared: Balanced trains 4 examples per pass") for r in reasons)


def test_presets_order_their_capacity_and_memory_as_their_names_say():
    ranks = {p: validate_config(apply_preset(RunConfig().model_dump(mode="json"), p, MEDIUM, 576)[0]) for p in PRESETS}
    assert ranks["quick_try"].method.r < ranks["balanced"].method.r < ranks["max_quality"].method.r
    low = ranks["low_memory"]
    assert low.method.name == "qlora" and low.training.gradient_checkpointing and low.training.per_device_batch_size == 1
    assert ranks["quick_try"].training.max_steps < ranks["balanced"].training.max_steps


def test_the_rank_grows_with_the_data_and_says_why():
    small = recommend_rank(DataStats(100, 50, 0.9), 2048)
    medium = recommend_rank(MEDIUM, 2048)
    large = recommend_rank(DataStats(100_000, 100, 0.9), 2048)
    assert small.r < medium.r < large.r
    assert "2,000 training rows x 60 supervised tokens each = 120,000 tokens" in medium.reasons[0]


def test_short_repeated_answers_halve_the_rank_and_long_answers_double_it():
    base = recommend_rank(MEDIUM, 2048).r
    classification = recommend_rank(DataStats(2000, 60, 0.01), 2048)
    assert classification.r == base // 2 and "narrow task" in classification.reasons[1]
    long_form = recommend_rank(DataStats(600, 300, 1.0), 2048)  # 180k tokens: same size bucket as MEDIUM
    assert long_form.r == 2 * base and "long answers" in long_form.reasons[1]


def test_the_rank_is_capped_by_the_model_width():
    advice = recommend_rank(DataStats(100_000, 100, 0.9), hidden_size=64)
    assert advice.r == 4 and any("hidden size 64 / 16" in r for r in advice.reasons)


def test_without_data_statistics_it_says_so():
    advice = recommend_rank(None, None)
    assert advice.r == 16 and "preview the data" in advice.reasons[0]


def test_data_stats_count_distinct_answers_over_the_whole_split():
    from types import SimpleNamespace

    prepared = SimpleNamespace(
        train_tokens=[TokenizedExample([1, 2, 3], [-100, 2, 3], 3), TokenizedExample([1, 2, 3], [-100, 2, 3], 3),
                      TokenizedExample([1, 4], [-100, 4], 2), TokenizedExample([5, 4], [-100, 4], 2)],
        report={"rows": {"train": 400}})
    stats = data_stats(prepared)
    assert stats == DataStats(train_rows=400, supervised_tokens_per_row=1.5, distinct_answer_share=0.5)


def test_steps_are_capped_at_three_passes_over_a_small_dataset_with_evaluations_kept_valid():
    small = DataStats(train_rows=300, supervised_tokens_per_row=60, distinct_answer_share=0.9)
    data, reasons = apply_preset(RunConfig().model_dump(mode="json"), "balanced", small, 576)
    config = validate_config(data)  # eval and save steps still fit the shorter run
    assert config.training.max_steps == 57  # ceil(3 * 300 / (4 x 4))
    assert config.training.save_steps % config.training.eval_steps == 0
    assert any("capped at 57" in r for r in reasons)
    big, _ = apply_preset(RunConfig().model_dump(mode="json"), "balanced", DataStats(100_000, 60, 0.9), 576)
    assert big["training"]["max_steps"] == PRESETS["balanced"].training["max_steps"]


def test_the_cli_preset_ids_are_the_presets():
    from studio_core.cli import PRESET_CHOICES

    assert PRESET_CHOICES == tuple(PRESETS)  # kept literal in the CLI so `--help` does not import the engine


def test_cli_preset_reads_the_data_and_explicit_settings_still_win(capsys):
    from studio_core.cli import build_parser, resolve_run_config

    args = build_parser().parse_args(["run", "--model", "tiny-random:llama", "--preset", "low_memory",
                                      "--set", "data.demo_rows=120", "--set", "training.learning_rate=0.001"])
    config = resolve_run_config(args)
    assert config.method.name == "lora" and config.training.gradient_checkpointing  # this machine has no GPU
    assert config.training.learning_rate == 0.001  # --set over the preset's 2e-4
    assert config.training.max_steps == 21  # 3 passes over the 108 training rows of a 120-row demo
    err = capsys.readouterr().err
    assert "108 training rows x" in err and "lora, not qlora: on a CPU" in err


def test_cli_lists_every_method(capsys):
    from studio_core.cli import main

    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in ("lora", "adalora", "boft", "vera", "prefix", "prompt"):
        assert name in out


def test_low_memory_uses_qlora_on_a_gpu_and_lora_on_a_cpu_where_4bit_saves_nothing():
    gpu, _ = apply_preset(RunConfig().model_dump(mode="json"), "low_memory", MEDIUM, 576, device="cuda")
    cpu, reasons = apply_preset(RunConfig().model_dump(mode="json"), "low_memory", MEDIUM, 576, device="cpu")
    assert gpu["method"]["name"] == "qlora" and cpu["method"]["name"] == "lora"
    assert cpu["training"] == gpu["training"] and cpu["training"]["gradient_checkpointing"]
    assert any("saves no memory" in r for r in reasons)
