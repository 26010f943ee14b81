"""The Streamlit studio: every wizard page, validation next to the field, the runs and hardware pages."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from studio_core import workflow
from studio_core.config import validate_config

ROOT = Path(__file__).resolve().parents[2]
MAIN = ROOT / "app" / "main.py"
HARDWARE = ROOT / "pages" / "hardware.py"
TIMEOUT = 30


def _run(path: Path) -> AppTest:
    at = AppTest.from_file(str(path), default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


RUNS = ROOT / "pages" / "runs.py"
STEP_PAGES = sorted((ROOT / "pages").glob("[0-9][0-9]_*.py"))
SECTIONS = ["data", "model", "preflight", "method", "pruning", "training", "comm", "evaluation", "export", "compile",
            "package", "signing"]


def test_main_opens_on_step_one_with_the_sidebar(studio_env: Path) -> None:
    at = _run(MAIN)
    assert [t.value for t in at.title] == ["1. Data Resolve"]
    assert at.sidebar.button(key="sidebar:start").disabled is False  # defaults are runnable
    assert "peft-studio run" in at.sidebar.code[0].value


@pytest.mark.parametrize("option,value,says", [
    ("runner.postScriptGC", True, "runs many times slower"),
    ("server.address", "", "listens on every interface, without an access token"),
])
def test_started_without_the_studio_settings_it_says_how_to_start_it(studio_env: Path, option, value, says) -> None:
    from streamlit import config as streamlit_config

    assert not [w for w in _run(MAIN).warning if "peft-studio studio" in w.value]  # the project's settings hold
    before = streamlit_config.get_option(option)
    streamlit_config.set_option(option, value)  # as when started some other way than `peft-studio studio`
    try:
        at = _run(MAIN)
    finally:
        streamlit_config.set_option(option, before)
    assert any(says in w.value and "peft-studio studio" in w.value for w in at.warning)


@pytest.mark.parametrize("page", STEP_PAGES, ids=[p.stem for p in STEP_PAGES])
def test_every_step_page_shows_every_field_of_its_section(page: Path, studio_env: Path) -> None:
    from studio_core.config import RunConfig

    at = _run(MAIN)
    at.switch_page(str(page)).run()
    assert not at.exception, [e.value for e in at.exception]
    number = int(page.name[:2])
    section = SECTIONS[number - 1]
    keys = {w.key for kind in (at.text_input, at.number_input, at.selectbox, at.checkbox) for w in kind}
    from studio_core.config import method_section

    model = method_section("lora") if section == "method" else RunConfig.model_fields[section].annotation
    for name in model.model_fields:
        assert f"field:{section}.{name}" in keys, f"{section}.{name} has no widget on step {number}"
    help_texts = {w.help for w in at.checkbox if w.key == f"field:{section}.enabled"}
    assert help_texts and all(help_texts)  # the field's description is the widget's help


@pytest.mark.parametrize("page,key,bad,message", [
    ("01_data_resolve.py", "field:data.val_fraction", 1.5, "less than 1"),
    ("01_data_resolve.py", "field:data.max_length", 4, "greater than or equal to 16"),
    ("06_training_exec.py", "field:training.eval_steps", 100, "exceeds training.max_steps"),
])
def test_a_bad_value_shows_its_message_and_blocks_start(page: str, key: str, bad, message: str,
                                                        studio_env: Path) -> None:
    at = _run(MAIN)
    at.switch_page(str(ROOT / "pages" / page)).run()
    at.number_input(key=key).set_value(bad).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(message in e.value for e in at.main.error), [e.value for e in at.main.error]
    assert at.sidebar.button(key="sidebar:start").disabled is True
    assert any(key.removeprefix("field:") in e.value for e in at.sidebar.error)


def test_unavailable_steps_are_labelled_and_disabled(studio_env: Path) -> None:
    at = _run(MAIN)
    at.switch_page(str(ROOT / "pages" / "05_pruning_init.py")).run()
    assert any("Not available yet" in w.value for w in at.warning)
    assert at.checkbox(key="field:pruning.enabled").disabled is True


def test_runs_page_lists_a_run_created_in_the_studio_home(studio_env: Path) -> None:
    config = validate_config({
        "name": "app-test", "data": {"demo_rows": 100, "max_length": 256},
        "model": {"ref": "tiny-random:llama"}, "preflight": {"enabled": False},
        "method": {"enabled": False}, "training": {"enabled": False}, "evaluation": {"enabled": False},
    })
    run = workflow.run(config)
    assert run.path.parent == studio_env / "runs"

    at = _run(RUNS)
    assert [s.value for s in at.subheader][0] == "Runs (1)"
    rows = at.dataframe[0].value.to_dict("records")
    assert len(rows) == 1
    assert rows[0]["run"] == run.run_id
    assert rows[0]["state"] == "completed" and not rows[0]["simulated"]
    assert rows[0]["steps done"] == 2  # data and model resolve; pre-flight was disabled


def test_runs_page_with_no_runs(studio_env: Path) -> None:
    at = _run(RUNS)
    assert [i.value for i in at.info] == ["No runs yet."]


@pytest.mark.parametrize("via_navigation", [False, True], ids=["page-file", "navigation"])
def test_hardware_page_shows_the_profile_and_backends(via_navigation: bool) -> None:
    if via_navigation:
        at = _run(MAIN)
        at.switch_page(str(HARDWARE)).run()
        assert not at.exception, [e.value for e in at.exception]
    else:
        at = _run(HARDWARE)
    assert [t.value for t in at.title] == ["Hardware"]
    assert [s.value for s in at.subheader] == ["Backends"]
    (profile,) = at.table
    labels = list(profile.value.index)
    assert labels[0] == "CPU" and "RAM" in labels and "Best precision" in labels
    assert "logical" in profile.value.loc["CPU"].iloc[0]
    (backends,) = at.dataframe
    frame = backends.value
    assert list(frame.columns) == ["backend", "usable", "version", "why not / install"]
    torch_row = frame[frame["backend"] == "torch"].iloc[0]
    assert bool(torch_row["usable"]) is True and torch_row["version"]
    for usable, why_not in zip(frame["usable"].astype(bool), frame["why not / install"], strict=True):
        assert bool(why_not) != usable  # an unusable backend says why and how to install it; a usable one not


def test_data_preview_shows_schema_rows_and_histogram(studio_env: Path) -> None:
    at = _run(MAIN)
    at.switch_page(str(ROOT / "pages" / "01_data_resolve.py")).run()
    at.number_input(key="field:data.demo_rows").set_value(120).run()
    at.session_state["run_config"]["model"]["ref"] = "tiny-random:llama"
    at.button(key="data:preview").click().run()
    assert not at.exception, [e.value for e in at.exception]
    summary = " ".join(m.value for m in at.markdown)
    assert "Schema **alpaca**" in summary and "108 train / 12 validation" in summary
    assert "**assistant**: Verdict:" in summary
    assert len(at.get("plotly_chart")) == 1


def test_model_page_lists_the_module_names(studio_env: Path) -> None:
    at = _run(MAIN)
    at.switch_page(str(ROOT / "pages" / "02_model_resolve.py")).run()
    at.text_input(key="field:model.ref").set_value("tiny-random:gpt2").run()
    at.button(key="model:inspect").click().run()
    assert not at.exception, [e.value for e in at.exception]
    text = " ".join(m.value for m in at.markdown)
    assert "`c_attn`" in text and "gpt2" in text
    names = at.dataframe[0].value
    assert any("c_attn" in row for row in names["names"])


def test_choosing_a_method_shows_its_own_parameters_and_invalid_ones_are_marked(studio_env: Path) -> None:
    at = _run(MAIN)
    at.switch_page(str(ROOT / "pages" / "04_training_init.py")).run()
    assert at.selectbox(key="field:method.name").options[:5] == ["lora", "qlora", "dora", "rslora", "pissa"]
    at.selectbox(key="field:method.name").set_value("adalora").run()
    assert not at.exception, [e.value for e in at.exception]
    keys = {w.key for kind in (at.text_input, at.number_input, at.selectbox, at.checkbox) for w in kind}
    assert {"field:method.init_r", "field:method.target_r", "field:method.warmup_fraction"} <= keys
    assert "field:method.r" not in keys
    assert at.session_state["run_config"]["method"]["init_r"] == 12  # AdaLoRA's defaults, not LoRA's leftovers
    at.number_input(key="field:method.target_r").set_value(20).run()
    assert any("set target_r <= init_r" in e.value for e in at.error)
    assert at.sidebar.button(key="sidebar:start").disabled is True
    at.selectbox(key="field:method.name").set_value("prompt").run()
    keys = {w.key for kind in (at.text_input, at.number_input, at.selectbox, at.checkbox) for w in kind}
    assert "field:method.virtual_tokens" in keys and "field:method.target_modules" not in keys
    assert "method.name=prompt" in at.sidebar.code[0].value


def test_a_preset_fills_the_method_and_training_and_explains_the_rank(studio_env: Path) -> None:
    at = _run(MAIN)
    at.number_input(key="field:data.demo_rows").set_value(120).run()
    at.session_state["run_config"]["model"]["ref"] = "tiny-random:llama"
    at.switch_page(str(ROOT / "pages" / "04_training_init.py")).run()
    at.selectbox(key="preset:choice").set_value("low_memory").run()
    at.button(key="preset:apply").click().run()
    assert not at.exception, [e.value for e in at.exception]
    config = at.session_state["run_config"]
    assert config["method"]["name"] == "lora" and config["training"]["per_device_batch_size"] == 1  # CPU: no qlora
    assert config["training"]["gradient_checkpointing"] is True
    assert config["method"]["r"] == 4 and at.number_input(key="field:method.r").value == 4  # the form shows it
    why = " ".join(m.value for m in at.markdown)
    assert "108 training rows x" in why and "rounded to a power of two" in why
    assert config["training"]["max_steps"] == 21 and "3 passes over 108 rows" in why  # not 200 steps on 108 rows


def test_fit_to_this_machine_changes_what_does_not_fit_and_says_why(studio_env: Path) -> None:
    at = _run(MAIN)
    at.session_state["run_config"]["model"]["ref"] = "tiny-random:llama"
    at.switch_page(str(ROOT / "pages" / "06_training_exec.py")).run()
    at.number_input(key="field:training.per_device_batch_size").set_value(100_000).run()
    at.switch_page(str(ROOT / "pages" / "04_training_init.py")).run()
    at.button(key="fit:apply").click().run()
    assert not at.exception, [e.value for e in at.exception]
    training = at.session_state["run_config"]["training"]
    assert training["gradient_checkpointing"] is True and training["per_device_batch_size"] < 100_000
    assert training["per_device_batch_size"] * training["gradient_accumulation_steps"] == 100_000 * 2
    why = " ".join(m.value for m in at.markdown)
    assert "gradient checkpointing on" in why and "examples per optimizer step" in why
