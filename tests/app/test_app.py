"""The Streamlit studio: every wizard page, validation next to the field, the runs and hardware pages."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from studio_core import workflow
from studio_core.runs import format_bytes
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


def test_main_opens_on_home_with_the_steps_and_the_sidebar(studio_env: Path) -> None:
    at = _run(MAIN)
    assert [t.value for t in at.title] == ["PEFT Studio"]
    steps = at.dataframe[0].value.to_dict("records")
    assert [r["step"] for r in steps][:2] == ["1. Data Resolve", "2. Model Resolve"] and len(steps) == 12
    states = {r["step"]: r["now"] for r in steps}
    assert states["1. Data Resolve"] == "configured" and states["5. Pruning Aware Init"] == "off"
    assert states["7. Dynamic Sparsification"] == "off"
    assert states["9. Export ONNX"] == "off"
    assert {b.key for b in at.button} >= {"home:demo", "home:mine"}  # the two quick starts
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

    from app.forms import ALWAYS_ON, _kind
    from app.labels import label_for
    from studio_core.config import method_section

    at = _run(MAIN)
    at.session_state["run_config"]["model"]["ref"] = "tiny-random:llama"  # step 4 reads its module names
    at.switch_page(str(page)).run()
    assert not at.exception, [e.value for e in at.exception]
    number = int(page.name[:2])
    section = SECTIONS[number - 1]
    if section not in ALWAYS_ON and not at.session_state["run_config"][section]["enabled"]:
        at.checkbox(key=f"field:{section}.enabled").check().run()  # an optional step shows its settings when on
    keys = {w.key for kind in (at.text_input, at.number_input, at.selectbox, at.checkbox, at.multiselect) for w in kind}
    labels = " ".join(m.value for m in at.markdown)
    model = method_section("lora") if section == "method" else RunConfig.model_fields[section].annotation
    for name, field in model.model_fields.items():
        path = f"{section}.{name}"
        if name == "enabled" and section in ALWAYS_ON:
            assert f"field:{path}" not in keys  # data and model always run: no "enabled" box
        elif _kind(path, field.annotation) in ("columns", "shapes", "lines", "tuple"):
            assert label_for(path) in labels, f"{path} has no editor on step {number}"
        elif _kind(path, field.annotation) == "modules":
            assert f"field:{path}:auto" in keys
        else:
            assert f"field:{path}" in keys, f"{path} has no widget on step {number}"
    widgets = [w for kind in (at.text_input, at.number_input, at.selectbox, at.checkbox) for w in kind
               if w.key.removeprefix("field:") in {f"{section}.{n}" for n in model.model_fields}]
    assert widgets
    for widget in widgets:  # the help is the field's description and names its config key (CLI parity)
        path = widget.key.removeprefix("field:")
        assert model.model_fields[path.split(".")[1]].description in widget.help and f"`{path}`" in widget.help


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


def test_unavailable_steps_are_labelled_and_disabled(studio_env: Path, step7_unavailable) -> None:
    at = _run(MAIN)
    at.switch_page(str(ROOT / "pages" / "07_dynamic_sparsification.py")).run()
    assert any("Not available yet" in i.value for i in at.info)
    assert "Compress the adapter's gradients" in " ".join(m.value for m in at.markdown)  # one line: what it does
    assert not [c for c in at.checkbox if c.key == "field:comm.enabled"]


def test_runs_page_lists_a_run_created_in_the_studio_home(studio_env: Path) -> None:
    config = validate_config({
        "name": "app-test", "data": {"demo_rows": 100, "max_length": 256},
        "model": {"ref": "tiny-random:llama"}, "preflight": {"enabled": False},
        "method": {"enabled": False}, "training": {"enabled": False}, "evaluation": {"enabled": False},
    })
    run = workflow.run(config)
    assert run.path.parent == studio_env / "runs"

    at = _page(_run(MAIN), "runs.py")
    assert [s.value for s in at.subheader][0] == "Runs (1)"
    rows = at.dataframe[0].value.to_dict("records")
    assert len(rows) == 1
    assert rows[0]["run"] == run.run_id and rows[0]["name"] == "app-test"
    assert rows[0]["state"] == "completed"  # not "(simulation)"
    assert rows[0]["started"][:4].isdigit() and rows[0]["duration"].endswith("s") and not rows[0]["failure"]
    assert rows[0]["disk"] == format_bytes(run.disk_bytes()) and rows[0]["disk"].endswith("KiB")  # data splits


def test_runs_page_with_no_runs(studio_env: Path) -> None:
    at = _page(_run(MAIN), "runs.py")
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
    assert [s.value for s in at.subheader] == ["Backends", "Connectors"]
    (profile,) = at.table
    labels = list(profile.value.index)
    assert labels[0] == "CPU" and "RAM" in labels and "Best precision" in labels
    assert "logical" in profile.value.loc["CPU"].iloc[0]
    backends, connectors = at.dataframe
    frame = backends.value
    assert list(frame.columns) == ["backend", "usable", "version", "why not / install"]
    torch_row = frame[frame["backend"] == "torch"].iloc[0]
    assert bool(torch_row["usable"]) is True and torch_row["version"]
    for usable, why_not in zip(frame["usable"].astype(bool), frame["why not / install"], strict=True):
        assert bool(why_not) != usable  # an unusable backend says why and how to install it; a usable one not
    hub = connectors.value.set_index("connector")
    assert set(hub.index) >= {"local-data", "local-models", "huggingface-hub", "mlflow", "tensorboard", "wandb"}
    assert bool(hub.loc["mlflow", "usable"]) and hub.loc["mlflow", "kind"] == "tracking"


def test_data_preview_shows_schema_rows_and_histogram(studio_env: Path) -> None:
    at = _run(MAIN)
    at.switch_page(str(ROOT / "pages" / "01_data_resolve.py")).run()
    at.number_input(key="field:data.demo_rows").set_value(120).run()
    at.session_state["run_config"]["model"]["ref"] = "tiny-random:llama"
    at.button(key="data:preview").click().run()
    assert not at.exception, [e.value for e in at.exception]
    summary = " ".join(m.value for m in at.markdown)
    assert "schema **alpaca**, 120 valid rows, 0 dropped" in summary and "108 train / 12 validation" in summary
    assert "**assistant**: Reason:" in summary and "Digest (sha256 of the split rows)" in summary
    assert len(at.get("plotly_chart")) == 1


def test_model_page_lists_the_module_names(studio_env: Path) -> None:
    at = _run(MAIN)
    at.switch_page(str(ROOT / "pages" / "02_model_resolve.py")).run()
    at.text_input(key="field:model.ref").set_value("tiny-random:gpt2").run()
    at.button(key="model:inspect").click().run()
    assert not at.exception, [e.value for e in at.exception]
    text = " ".join(m.value for m in at.markdown)
    assert "`c_attn`" in text and "gpt2" in text
    names = next(d.value for d in at.dataframe if "names" in d.value.columns)
    assert any("c_attn" in row for row in names["names"])
    digests = next(d.value for d in at.dataframe if "sha256" in d.value.columns)
    assert set(digests["what"]) == {"weights", "tokenizer"}  # digests labelled


def test_choosing_a_method_shows_its_own_parameters_and_invalid_ones_are_marked(studio_env: Path) -> None:
    at = _run(MAIN)
    at.session_state["run_config"]["model"]["ref"] = "tiny-random:llama"
    at.switch_page(str(ROOT / "pages" / "04_training_init.py")).run()
    assert at.selectbox(key="field:method.name").options[:3] == ["LoRA (lora)", "QLoRA (qlora)", "DoRA (dora)"]
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
    at.session_state["run_config"]["data"]["demo_rows"] = 120
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


def _page(at: AppTest, name: str) -> AppTest:
    at.switch_page(str(ROOT / "pages" / name)).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_an_upload_becomes_the_data_path_in_the_config_and_the_widget(studio_env: Path) -> None:
    at = _page(_run(MAIN), "01_data_resolve.py")
    row = b'{"instruction": "Say hi", "output": "hi"}\n'
    at.file_uploader(key="data:upload").upload("my data.jsonl", row * 3, "application/json").run()
    assert not at.exception, [e.value for e in at.exception]
    saved = studio_env / "uploads" / "my_data.jsonl"
    assert saved.read_bytes() == row * 3
    assert at.session_state["run_config"]["data"]["path"] == str(saved)
    assert at.text_input(key="field:data.path").value == str(saved)  # the widget shows what the config holds
    _page(at, "02_model_resolve.py")
    _page(at, "01_data_resolve.py")  # leaving the page and coming back keeps it
    assert at.text_input(key="field:data.path").value == str(saved)
    assert at.session_state["run_config"]["data"]["path"] == str(saved)
    assert f"data.path={saved}" in at.sidebar.code[0].value  # and it is what the run (and the CLI) would use
    training = at.session_state["run_config"]["training"]  # the demo's recipe stays with the demo
    assert (training["label_words"], training["label_group"], training["max_steps"]) == ([], "", 40)
    assert "label_words" not in at.sidebar.code[0].value


def test_an_import_replaces_every_field_the_name_included(studio_env: Path) -> None:
    import json

    from studio_core.config import RunConfig

    at = _page(_run(MAIN), "06_training_exec.py")
    at.sidebar.text_input(key="field:name").set_value("typed before").run()
    data = RunConfig().model_dump(mode="json")
    data["name"] = "imported-run"
    data["training"]["max_steps"] = 17
    data["method"] = {"name": "ia3", "target_modules": ["q_proj", "v_proj"], "feedforward_modules": "auto"}
    data["model"]["ref"] = "tiny-random:llama"
    at.sidebar.file_uploader(key="sidebar:import").upload("c.json", json.dumps(data).encode(), "application/json").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["run_config"] == RunConfig.model_validate(data).model_dump(mode="json")
    assert at.sidebar.text_input(key="field:name").value == "imported-run"
    assert at.number_input(key="field:training.max_steps").value == 17
    _page(at, "04_training_init.py")
    assert at.selectbox(key="field:method.name").value == "ia3"
    assert at.multiselect(key="field:method.target_modules").value == ["q_proj", "v_proj"]


def test_switching_the_method_clears_the_presets_text(studio_env: Path) -> None:
    at = _run(MAIN)
    at.session_state["run_config"]["model"]["ref"] = "tiny-random:llama"
    at.session_state["run_config"]["data"]["demo_rows"] = 120
    at = _page(at, "04_training_init.py")
    at.button(key="preset:apply").click().run()
    assert any("Applied preset" in s.value for s in at.success)
    at.selectbox(key="field:method.name").set_value("ia3").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not [s for s in at.success if "Applied" in s.value]  # it described a method no longer chosen
    assert at.session_state["run_config"]["method"]["name"] == "ia3"


def test_text_that_does_not_parse_is_kept_shown_wrong_and_blocks_start(studio_env: Path) -> None:
    at = _page(_run(MAIN), "06_training_exec.py")
    at.text_input(key="field:training.learning_rate").set_value("5e-4x").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.text_input(key="field:training.learning_rate").value == "5e-4x"  # the user's text, not the old value
    assert any("'5e-4x' is not a number" in e.value for e in at.main.error)
    assert at.sidebar.button(key="sidebar:start").disabled is True
    assert at.session_state["run_config"]["training"]["learning_rate"] == 5e-4  # what was valid, until fixed
    at.text_input(key="field:training.learning_rate").set_value("2e-4").run()
    assert at.sidebar.button(key="sidebar:start").disabled is False
    assert at.session_state["run_config"]["training"]["learning_rate"] == 2e-4


def test_typed_target_modules_that_do_not_parse_block_start(studio_env: Path) -> None:
    at = _run(MAIN)
    at.session_state["run_config"]["model"]["ref"] = "no-such-model-kind:x"  # module names cannot be read: typed
    at = _page(at, "04_training_init.py")
    at.checkbox(key="field:method.target_modules:auto").uncheck().run()
    at.text_input(key="field:method.target_modules").set_value('["q_proj"').run()
    assert any("a module name has letters" in e.value for e in at.main.error)
    assert at.sidebar.button(key="sidebar:start").disabled is True
    at.text_input(key="field:method.target_modules").set_value("q_proj, v_proj").run()
    assert at.session_state["run_config"]["method"]["target_modules"] == ["q_proj", "v_proj"]


def test_the_config_survives_a_reload_through_the_draft_in_the_url(studio_env: Path) -> None:
    at = _run(MAIN)
    at.sidebar.text_input(key="field:name").set_value("kept across reloads").run()
    draft = at.query_params["draft"]
    draft = draft[0] if isinstance(draft, list) else draft
    reloaded = AppTest.from_file(str(MAIN), default_timeout=TIMEOUT)
    reloaded.query_params["draft"] = draft
    reloaded.run()
    assert reloaded.sidebar.text_input(key="field:name").value == "kept across reloads"
    assert _run(MAIN).sidebar.text_input(key="field:name").value == "run"  # another browser: its own draft


def test_step_pages_show_the_last_runs_output(studio_env: Path) -> None:
    config = validate_config({
        "name": "outputs", "data": {"demo_rows": 100, "max_length": 256}, "model": {"ref": "tiny-random:llama"},
        "preflight": {"enabled": False}, "method": {"enabled": False}, "training": {"enabled": False},
        "evaluation": {"enabled": False},
    })
    run = workflow.run(config)
    at = _page(_run(MAIN), "01_data_resolve.py")
    text = " ".join(m.value for m in at.markdown)
    assert "Kept **90 train / 10 validation**" in text and "schema **alpaca**" in text
    assert any(run.run_id in c.value for c in at.caption)
    at = _page(at, "02_model_resolve.py")
    assert any(r["what"] == "weights" for r in at.dataframe[0].value.to_dict("records"))  # digests, labelled


def test_the_data_reports_quality_section_is_shown_when_present(studio_env: Path) -> None:
    import json

    config = validate_config({"name": "q", "data": {"demo_rows": 100, "max_length": 256},
                              "model": {"ref": "tiny-random:llama"}, "preflight": {"enabled": False},
                              "method": {"enabled": False}, "training": {"enabled": False},
                              "evaluation": {"enabled": False}})
    run = workflow.run(config)
    path = run.artifacts / "data" / "report.json"
    report = json.loads(path.read_text())
    report["quality"] = [{"level": "warning", "code": "near_duplicates", "message": "3 rows repeat another's prompt",
                          "count": 3, "records": [4, 9, 12]},
                         {"level": "error", "code": "empty_answer", "message": "answers are empty", "count": 1,
                          "records": [7]}]
    path.write_text(json.dumps(report))
    at = _page(_run(MAIN), "01_data_resolve.py")
    assert any("`near_duplicates`: 3 rows repeat another's prompt (3 rows)" in w.value for w in at.warning)
    assert any("`empty_answer`: answers are empty (1 rows)" in e.value for e in at.error)


def test_a_failed_run_names_its_stage_and_its_settings_open_in_the_wizard(studio_env: Path) -> None:
    config = validate_config({"name": "broken", "data": {"demo_rows": 100, "max_length": 256},
                              "model": {"ref": "tiny-random:llama"}, "method": {"target_modules": ["nope_proj"]},
                              "preflight": {"micro_run_steps": 0}})
    with pytest.raises(workflow.StageFailed):
        workflow.run(config)
    at = _page(_run(MAIN), "runs.py")
    assert any(e.value.startswith("Step 3, Pre-flight Check, failed: no-go") and "nope_proj not found" in e.value
               for e in at.error)
    at.button(key="runs-fix").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert [t.value for t in at.title] == ["3. Pre-flight Check"]
    assert at.session_state["run_config"]["method"]["target_modules"] == ["nope_proj"]
    assert at.session_state["run_config"]["name"] == "broken"


def test_the_column_mapping_boxes_write_the_mapping_and_an_empty_box_removes_it(studio_env: Path) -> None:
    at = _page(_run(MAIN), "01_data_resolve.py")
    at.text_input(key="field:data.columns.instruction").input("question").run()
    at.text_input(key="field:data.columns.output").input("answer").run()
    assert at.session_state["run_config"]["data"]["columns"] == {"instruction": "question", "output": "answer"}
    assert 'data.columns={"instruction": "question", "output": "answer"}' in at.sidebar.code[0].value
    at.text_input(key="field:data.columns.instruction").input("").run()
    assert at.session_state["run_config"]["data"]["columns"] == {"output": "answer"}


def test_turning_training_off_turns_training_init_off_with_it(studio_env: Path) -> None:
    at = _page(_run(MAIN), "06_training_exec.py")
    at.checkbox(key="field:training.enabled").uncheck().run()
    config = at.session_state["run_config"]
    assert config["training"]["enabled"] is False and config["method"]["enabled"] is False
    assert not [e for e in at.error if "run together" in e.value]  # no cross-field error to fix by hand


def test_privacy_ticked_on_the_demo_drops_the_recipes_label_loss_instead_of_refusing_it(studio_env: Path) -> None:
    at = _run(MAIN)
    # step 4 lists the embedded model's layers: on a fresh model cache that converts its GGUF first (a minute)
    at.switch_page(str(ROOT / "pages" / "04_training_init.py")).run(timeout=600)
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["run_config"]["training"]["label_words"] == ["COMPLIANT", "NON-COMPLIANT"]
    at.checkbox(key="field:privacy.enabled").check().run(timeout=120)
    assert not at.exception, [e.value for e in at.exception]
    training = at.session_state["run_config"]["training"]
    assert at.session_state["run_config"]["privacy"]["enabled"] is True
    assert (training["label_words"], training["label_group"], training["max_steps"]) == ([], "", 90)
    problems = " ".join(e.value for e in at.sidebar.error) + " ".join(e.value for e in at.error)
    assert "label_words" not in problems
    at.checkbox(key="field:privacy.enabled").uncheck().run(timeout=120)
    assert at.session_state["run_config"]["training"]["label_words"] == ["COMPLIANT", "NON-COMPLIANT"]
