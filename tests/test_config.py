import json

import pytest

from studio_core.config import RunConfig, all_field_paths, json_schema, validate_config
from studio_core.config_io import apply_overrides, load_config, parse_value, save_config
from studio_core.errors import ConfigError


def test_defaults_are_valid_and_offline():
    config = validate_config({})
    assert config.method.enabled and config.training.enabled and config.evaluation.enabled
    assert config.model.ref == "embedded:smollm2-135m-instruct"
    assert config.data.path == "demo:legal-audit"


def test_every_field_has_a_description():
    def walk(model, prefix=""):
        for name, field in model.model_fields.items():
            assert field.description, f"{prefix}{name} has no description"
            annotation = field.annotation
            if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
                walk(annotation, f"{prefix}{name}.")
    walk(RunConfig)


def test_every_step_section_has_an_enabled_flag():
    sections = ["data", "model", "preflight", "method", "training", "pruning", "privacy", "comm", "evaluation",
                "export", "compile", "package", "signing", "policy"]
    for section in sections:
        assert f"{section}.enabled" in all_field_paths()


def test_all_problems_reported_at_once_with_field_paths():
    with pytest.raises(ConfigError) as e:
        validate_config({"data": {"val_fraction": 1.5, "max_length": 3}, "method": {"r": 0}})
    fields = {p.field for p in e.value.problems}
    assert {"data.val_fraction", "data.max_length", "method.r"} <= fields


def test_cross_field_problems_name_field_and_fix():
    with pytest.raises(ConfigError) as e:
        validate_config({"method": {"enabled": False}, "signing": {"enabled": True}})
    messages = {p.field: p.message for p in e.value.problems}
    assert "method.enabled" in messages["training.enabled"]
    assert "package.enabled=true" in messages["signing.enabled"]


def test_unknown_key_suggests_nearest():
    with pytest.raises(ConfigError) as e:
        validate_config({"training": {"max_stepz": 3}})
    assert "training.max_steps" in str(e.value)


@pytest.mark.parametrize("text,value", [("true", True), ("3", 3), ("0.1", 0.1), ('["q_proj"]', ["q_proj"]),
                                        ("hello", "hello"), ("data/x.jsonl", "data/x.jsonl")])
def test_set_values_parse_as_json_else_string(text, value):
    assert parse_value(text) == value


def test_overrides_apply_and_unknown_key_is_named():
    data = apply_overrides({}, ["training.max_steps=70", 'method.target_modules=["q_proj"]'])
    config = validate_config(data)
    assert config.training.max_steps == 70 and config.method.target_modules == ["q_proj"]
    with pytest.raises(ConfigError) as e:
        apply_overrides({}, ["trainng.max_steps=3"])
    assert "trainng.max_steps" in str(e.value) and "did you mean training.max_steps" in str(e.value)


def test_save_load_round_trip(tmp_path):
    config = validate_config({"name": "x", "training": {"max_steps": 90}})
    save_config(config, tmp_path / "c.json")
    assert load_config(tmp_path / "c.json") == config


def test_load_config_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{\n  'x': 1\n}")
    with pytest.raises(ConfigError, match="bad.json"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.json")


def test_schema_has_descriptions():
    schema = json_schema()
    assert "data" in schema["properties"]
    text = json.dumps(schema)
    assert "Maximum tokens per example" in text


def test_eval_steps_alone_moves_the_checkpoint_interval_to_a_multiple_of_it():
    from studio_core.config_io import apply_overrides

    config = validate_config(apply_overrides({}, ["training.eval_steps=8"]))
    assert (config.training.eval_steps, config.training.save_steps) == (8, 24)
    assert validate_config({}).training.save_steps == 20
    with pytest.raises(ConfigError, match=r"training.save_steps: 20 is not a multiple .* set training.save_steps=24"):
        validate_config(apply_overrides({}, ["training.eval_steps=8", "training.save_steps=20"]))


def test_the_demo_data_brings_its_recipe_and_your_own_data_the_plain_defaults():
    from studio_core.config import DEMO_RECIPE

    demo = validate_config({})
    for section, fields in DEMO_RECIPE.items():
        assert getattr(demo, section).model_dump(include=set(fields)) == fields
    assert (demo.training.max_steps, demo.training.label_group) == (90, "Policy rule: (.*)")
    own = validate_config({"data": {"path": "my.jsonl"}})
    assert (own.training.max_steps, own.training.per_device_batch_size, own.training.label_words,
            own.training.label_group, own.evaluation.task_rows) == (40, 4, [], "", 32)
    # a field you set stays yours; the rest of the recipe still comes
    mine = validate_config({"training": {"max_steps": 12, "label_group": ""}})
    assert (mine.training.max_steps, mine.training.per_device_batch_size, mine.training.label_group) == (12, 8, "")
    assert mine.training.label_words == ["COMPLIANT", "NON-COMPLIANT"]
    # the recipe's label loss stays out where it cannot run, instead of failing a config that never asked for it
    odd = validate_config({"training": {"per_device_batch_size": 3}})
    assert (odd.training.label_words, odd.training.label_group) == ([], "")
    private = RunConfig.model_validate({"privacy": {"enabled": True}})
    assert private.training.label_words == [] and private.training.max_steps == 90


def test_switching_the_data_swaps_the_recipe_fields_you_left_alone():
    from studio_core.config import switch_recipe

    demo = RunConfig().model_dump(mode="json")
    demo["training"]["max_steps"] = 120  # changed by the user: stays
    own = switch_recipe(demo, "data.path", "my.jsonl")
    assert own["data"]["path"] == "my.jsonl" and own["training"]["max_steps"] == 120
    assert (own["training"]["label_words"], own["training"]["label_group"], own["training"]["per_device_batch_size"],
            own["evaluation"]["task_rows"]) == ([], "", 4, 32)
    assert validate_config(own).training.label_words == []
    back = switch_recipe(own, "data.path", "demo:legal-audit")
    assert back["training"]["label_words"] == ["COMPLIANT", "NON-COMPLIANT"] and back["training"]["max_steps"] == 120
    assert demo["training"]["label_words"] == ["COMPLIANT", "NON-COMPLIANT"]  # the input is not changed


def test_the_recipe_belongs_to_the_embedded_model_where_it_was_measured():
    from studio_core.config import switch_recipe

    tiny = validate_config({"model": {"ref": "tiny-random:llama"}})
    assert (tiny.training.max_steps, tiny.training.label_words, tiny.evaluation.task_rows) == (40, [], 32)
    other = switch_recipe(RunConfig().model_dump(mode="json"), "model.ref", "tiny-random:llama")
    assert (other["training"]["label_words"], other["training"]["per_device_batch_size"]) == ([], 4)
    back = switch_recipe(other, "model.ref", "embedded:smollm2-135m-instruct")
    assert back == RunConfig().model_dump(mode="json")


def test_privacy_turned_on_takes_the_recipes_label_loss_away_and_off_brings_it_back():
    from studio_core.config import switch_recipe

    private = switch_recipe(RunConfig().model_dump(mode="json"), "privacy.enabled", True)
    assert (private["training"]["label_words"], private["training"]["label_group"]) == ([], "")
    assert private["training"]["max_steps"] == 90 and private["privacy"]["enabled"] is True
    assert validate_config(private).privacy.enabled  # no "clear training.label_words under privacy"
    public = switch_recipe(private, "privacy.enabled", False)
    assert public == RunConfig().model_dump(mode="json")
