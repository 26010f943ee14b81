"""The label loss grouped by rule, set on step 6 in a real browser: the label words typed into their table, the
pattern in its field, a batch that splits a pair refused under the field, the run's plan and its count of groups
on the monitor (screenshots in test-artifacts/labels-*.png)."""

from __future__ import annotations

import json
import re

from tests.app.test_browser import (  # noqa: F401
    browser, go, open_page, set_text, shot, shown_run_id, small_demo, studio)


def add_rows(page, label: str, values: list[str]) -> None:
    """Type `values` into the one-column table field `label` (a Streamlit data editor), a new row each."""
    grid = page.get_by_test_id("stDataFrame").filter(has_text=label).first
    for value in values:
        box = grid.bounding_box()
        grid.click(position={"x": 100, "y": box["height"] - 15})  # the empty row at the foot adds a row to edit
        cell = page.locator("textarea.gdg-input")  # the grid's cell editor, drawn over the new row
        cell.wait_for()
        cell.fill(value)
        cell.press("Enter")
        page.wait_for_timeout(1500)  # the rerun that commits the row


def test_label_words_grouped_by_rule_from_step_6_reach_the_run_and_its_monitor(studio, browser):  # noqa: F811
    page = open_page(browser.new_context(viewport={"width": 1400, "height": 1100}), studio.url)
    small_demo(page)
    go(page, "6. Training Exec")
    set_text(page, "Training steps", "10")
    page.get_by_text("More settings").first.click()
    add_rows(page, "Label words (the answers' classes)", ["COMPLIANT", "NON-COMPLIANT"])
    set_text(page, "Label group (pattern over the prompt)", "Policy rule: (.*)")
    set_text(page, "Batch size", "3")
    page.get_by_text(re.compile(r"not a multiple of 2; set it to 2 or 4")).first.wait_for()
    page.get_by_label("Label group (pattern over the prompt)", exact=True).scroll_into_view_if_needed()
    shot(page, "labels-step6-odd-batch")
    set_text(page, "Batch size", "4")
    page.get_by_role("button", name="Start", exact=True).click()
    page.get_by_role("heading", name="6. Training Exec", exact=True).wait_for()
    run_id = shown_run_id(page)
    config = json.loads((studio.home / "runs" / run_id / "config.json").read_text())
    assert config["training"]["label_words"] == ["COMPLIANT", "NON-COMPLIANT"]
    assert config["training"]["label_group"] == "Policy rule: (.*)"
    page.get_by_text(re.compile(r"^Label loss \(weight 1\) within 8 groups of training\.label_group")).wait_for(
        timeout=300_000)
    page.get_by_text(re.compile(r"^Completed: final training loss")).wait_for(timeout=300_000)
    page.get_by_text(re.compile(r"^Label loss \(weight 1\) within 8 groups")).scroll_into_view_if_needed()
    shot(page, "labels-step6-completed")
