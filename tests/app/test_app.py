"""The Streamlit studio: home lists the runs on disk, the hardware page shows the profile and backends."""

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


def test_home_renders_with_the_studio_home_and_no_runs(studio_env: Path) -> None:
    at = _run(MAIN)
    assert [t.value for t in at.title] == ["PEFT Studio"]
    assert any(str(studio_env) in c.value for c in at.caption)
    assert [s.value for s in at.subheader] == ["Runs (0)"]
    assert [i.value for i in at.info] == ["No runs yet."]


def test_home_lists_a_run_created_in_the_studio_home(studio_env: Path) -> None:
    config = validate_config({
        "name": "app-test", "data": {"demo_rows": 100, "max_length": 256},
        "model": {"ref": "tiny-random:llama"}, "preflight": {"enabled": False},
        "method": {"enabled": False}, "training": {"enabled": False}, "evaluation": {"enabled": False},
    })
    run = workflow.run(config)
    assert run.path.parent == studio_env / "runs"

    at = _run(MAIN)
    assert [s.value for s in at.subheader] == ["Runs (1)"]
    assert not at.info
    (table,) = at.dataframe
    rows = table.value.to_dict("records")
    assert len(rows) == 1
    assert rows[0]["run"] == run.run_id
    assert rows[0]["state"] == "completed" and not rows[0]["simulated"]
    assert rows[0]["steps done"] == 2  # data and model resolve; pre-flight was disabled


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
