"""Step 7 in a real browser: gradient compression on 2 processes set on its page, the run, then bytes per step and
the update's size-vs-quality curve on the same page. Screenshots in test-artifacts/ (comm-*.png)."""

from __future__ import annotations

import json
import re

from tests.app.test_browser import browser, go, open_page, pytestmark, set_text, shot, shown_run_id, small_demo, studio  # noqa: F401 (its fixtures and skip mark)


def test_step7_sets_compression_and_processes_and_shows_bytes_per_step_and_the_curve_after_the_run(studio, browser):  # noqa: F811
    page = open_page(browser.new_context(viewport={"width": 1400, "height": 1100}), studio.url)
    small_demo(page)
    page.get_by_text("Simulation (tiny model, seconds)", exact=True).click()
    page.wait_for_timeout(1000)
    go(page, "7. Dynamic Sparsification")
    page.get_by_text("Run Dynamic Sparsification", exact=True).click()
    page.get_by_label("Gradient compression", exact=True).wait_for()
    set_text(page, "Processes", "2")
    shot(page, "comm-step7-settings")
    page.get_by_role("button", name="Start", exact=True).click()
    page.get_by_role("heading", name="6. Training Exec", exact=True).wait_for()
    run_id = shown_run_id(page)
    config = json.loads((studio.home / "runs" / run_id / "config.json").read_text())
    assert config["training"]["nproc"] == 2 and config["comm"]["enabled"] is True
    page.get_by_text(re.compile(r"^Completed: final training loss")).wait_for(timeout=400_000)
    shot(page, "comm-step6-completed")
    go(page, "7. Dynamic Sparsification")
    page.get_by_text("Compression in the last run").wait_for()
    page.get_by_text(re.compile(r"per step")).first.wait_for()
    page.get_by_text("Update size against validation loss").wait_for()
    page.get_by_role("cell", name="base (no update)").wait_for()
    shot(page, "comm-step7-results")
    page.get_by_role("cell", name="base (no update)").scroll_into_view_if_needed()
    page.wait_for_timeout(800)
    shot(page, "comm-step7-curve")
    report = json.loads((studio.home / "runs" / run_id / "artifacts" / "comm" / "report.json").read_text())
    assert report["gradients"]["used"] and report["gradients"]["processes"] == 2
