"""Differential privacy in a real browser: the privacy section on step 4, epsilon live on step 6, the privacy
report on step 8 and in the package view on step 11 (screenshots in test-artifacts/privacy-*.png)."""

from __future__ import annotations

import json
import re

from tests.app.test_browser import browser, go, open_page, set_text, shot, shown_run_id, small_demo, studio  # noqa: F401


def test_a_private_run_from_step_4_shows_epsilon_live_and_its_report_on_steps_8_and_11(studio, browser):  # noqa: F811
    page = open_page(browser.new_context(viewport={"width": 1400, "height": 1100}), studio.url)
    page.set_default_timeout(180_000)  # step 4 reads the model's module names; slow on a loaded machine
    small_demo(page)
    go(page, "4. Training Init")
    page.get_by_text("Differentially private training", exact=True).click()
    page.get_by_label("Target epsilon (the budget)", exact=True).wait_for()
    page.get_by_text("The unit of privacy is one training example").wait_for()
    set_text(page, "Target epsilon (the budget)", "4")
    page.get_by_text("Privacy", exact=True).last.scroll_into_view_if_needed()
    shot(page, "privacy-step4-section")
    go(page, "6. Training Exec")
    set_text(page, "Training steps", "10")
    go(page, "11. TGSP Packing")
    page.get_by_text("Build the package", exact=True).click()
    page.wait_for_timeout(1000)
    page.get_by_role("button", name="Start", exact=True).click()
    page.get_by_role("heading", name="6. Training Exec", exact=True).wait_for()
    run_id = shown_run_id(page)
    page.get_by_text(re.compile(r"^Step 6, Training Exec: step \d+/10, loss .*epsilon \d+\.\d+ spent")).wait_for(
        timeout=300_000)
    # The charts refresh on their own, slower cadence (app/monitor.py: CHARTS_EVERY_S): epsilon beside the loss.
    page.get_by_text("Privacy spent (epsilon)").first.wait_for(timeout=30_000)
    page.get_by_text("Loss", exact=True).first.wait_for()
    shot(page, "privacy-step6-live")
    page.get_by_text(re.compile(r"^Completed: .*epsilon \d+\.\d+ spent")).wait_for(timeout=400_000)
    shot(page, "privacy-step6-completed")
    go(page, "8. Evaluation")
    page.get_by_text(re.compile(r"Differentially private: epsilon \d\.\d+ of a budget of 4")).wait_for()
    page.get_by_text("per-example clip norm", exact=True).wait_for()
    shot(page, "privacy-step8-report")
    go(page, "11. TGSP Packing")
    page.get_by_text("Privacy evidence").wait_for()
    page.get_by_text(re.compile(r"Differentially private: epsilon")).wait_for()
    page.get_by_text("Privacy evidence").scroll_into_view_if_needed()
    shot(page, "privacy-step11-package")
    report = json.loads((studio.home / "runs" / run_id / "artifacts" / "privacy.json").read_text())
    assert report["target_epsilon"] == 4 and 0 < report["epsilon"] <= 4  # what step 4's field set
