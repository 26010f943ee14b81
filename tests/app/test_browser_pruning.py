"""Step 5 in a real browser: turn pruning on, see its settings, and the last pruned run's 2:4 report."""

from __future__ import annotations

import re

import pytest

from studio_core import workflow
from studio_core.config import validate_config
from tests.app.test_browser import ARGS, CHROMIUM, Studio, go, open_page, set_text, shot

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium not installed (make setup does it)")


@pytest.fixture
def pruned_home(tmp_path):
    home = tmp_path / "home"
    workflow.run(validate_config({
        "simulate": True, "model": {"ref": "tiny-random:llama"}, "data": {"demo_rows": 100},
        "preflight": {"enabled": False}, "pruning": {"enabled": True, "method": "wanda", "calibration_rows": 8},
        "training": {"max_steps": 4, "eval_steps": 2},
        "evaluation": {"max_rows": 8, "task_rows": 2, "max_new_tokens": 4, "samples": 1},
    }), home)
    return home


def test_step_5_shows_its_settings_and_the_last_runs_two_four_report(pruned_home):
    from playwright.sync_api import sync_playwright

    studio = Studio(pruned_home).start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            page = open_page(browser.new_context(viewport={"width": 1280, "height": 1000}), studio.url)
            go(page, "2. Model Resolve")
            set_text(page, "Base model", "tiny-random:llama")  # its layer names read in a moment
            go(page, "5. Pruning Aware Init")
            page.get_by_text("Run Pruning Aware Init").click()
            page.get_by_text("Calibration rows (Wanda)").wait_for()
            page.get_by_text("How the kept 2 of 4 are chosen").wait_for()
            page.get_by_text("2:4 sparsity of the last run").wait_for()
            page.get_by_text("Violating groups after merge").wait_for()
            page.wait_for_timeout(1500)
            shot(page, "step5-pruning-settings")
            page.get_by_text("Quality", exact=True).wait_for()  # the table's cells are drawn on a canvas
            compressed = page.get_by_text("Compressed storage")
            compressed.scroll_into_view_if_needed()
            page.get_by_text(re.compile(r"at 16 bits .* \(0\.5625x\)")).wait_for()
            page.wait_for_timeout(1500)
            shot(page, "step5-pruning-report")
            browser.close()
    finally:
        studio.kill()
