"""Step 2's model registry and step 6's tracking settings in a real browser (Debian's Chromium via Playwright).

The studio's Hub calls go to `tests.connectors.hub_standin.StandinHub` (HF_ENDPOINT): a local server standing in
for the Hugging Face Hub, which this machine cannot reach, with hand-written answers in the Hub API's shape.
"""

from __future__ import annotations

import pytest

from studio_core.models.tiny import ensure_tiny_random
from tests.app.test_browser import ARTIFACTS, CHROMIUM, Studio, browser, go, open_page, shot  # noqa: F401 (fixture)
from tests.connectors.hub_standin import StandinHub, other_repos, tiny_llama_repo

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium not installed (make setup does it)")


def choose(page, label: str, option: str) -> None:
    page.get_by_label(label).first.click()
    page.get_by_role("option", name=option, exact=True).click()
    page.wait_for_timeout(800)


def test_search_the_hub_see_details_use_and_download_a_model_then_turn_tracking_on(
        browser, tmp_path, model_cache, monkeypatch):  # noqa: F811 - the shared fixture
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "user-hf-cache"))
    with StandinHub([tiny_llama_repo(ensure_tiny_random("llama", model_cache)), *other_repos()]) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        stored = tmp_path / "home" / "uploads" / "clauses.jsonl"  # data already under the studio's roots
        stored.parent.mkdir(parents=True)
        stored.write_text('{"prompt": "Is this clause compliant?", "completion": "COMPLIANT"}\n' * 20)
        studio = Studio(tmp_path / "home").start()
        try:
            page = open_page(browser.new_context(viewport={"width": 1400, "height": 1300}), studio.url)
            go(page, "1. Data Resolve")
            page.get_by_text("Or pick data already on this machine").wait_for()
            page.get_by_role("button", name="Use it", exact=True).click()
            page.wait_for_timeout(1500)
            assert page.get_by_label("Training data file", exact=True).input_value() == str(stored.resolve())
            shot(page, "local-data-picker")

            go(page, "2. Model Resolve")
            page.get_by_text("Most downloaded for this task").wait_for()  # popular text-generation models
            page.get_by_role("textbox", name="Search the Hub").fill("llama")
            page.get_by_role("textbox", name="Search the Hub").press("Enter")
            page.get_by_text("2 models").wait_for()
            shot(page, "registry-search")

            choose(page, "Details of", "standin-org/custom-code-llama")
            page.get_by_text("Not usable by the studio").wait_for()
            assert page.get_by_text("trust_remote_code").count() >= 1
            shot(page, "registry-not-usable")

            choose(page, "Details of", "standin-org/tiny-llama")
            # This model's details (the last one's licence was "not stated"); its memory fit is the studio process's
            # first use of torch and transformers: tens of seconds on a loaded 2-core machine.
            page.get_by_text("apache-2.0").wait_for(timeout=240_000)
            page.get_by_text("known: q_proj").wait_for()
            page.get_by_text("yes (lora:").wait_for()  # fits this machine, by the memory estimator
            page.get_by_role("button", name="Download", exact=True).click()
            page.get_by_text("Downloaded standin-org/tiny-llama").wait_for()
            page.get_by_role("button", name="Use this model", exact=True).click()
            page.get_by_text("The base model (model.ref) is now").wait_for()
            assert page.get_by_label("Base model", exact=True).input_value() == "hf:standin-org/tiny-llama"
            shot(page, "registry-used-and-downloaded")
            assert not [r for r in hub.requests if r[1].endswith(("pytorch_model.bin", "README.md"))]

            go(page, "6. Training Exec")
            page.get_by_text("Track the run (MLflow, TensorBoard, W&B)").click()
            page.get_by_text("Trackers").first.wait_for()
            page.get_by_text("W&B mode").first.wait_for()
            page.get_by_text("Config file and CLI").click()
            page.get_by_text("tracking.enabled=true").first.wait_for()  # the sidebar's equivalent CLI command
            page.get_by_text("Trackers").first.scroll_into_view_if_needed()
            shot(page, "tracking-settings")

            go(page, "Hardware")
            page.get_by_role("heading", name="Connectors").wait_for()
            page.get_by_role("heading", name="Connectors").scroll_into_view_if_needed()
            page.wait_for_timeout(1500)  # let the table draw for the screenshot
            shot(page, "hardware-connectors")

            hub.__exit__()  # the Hub goes away
            go(page, "2. Model Resolve")
            page.get_by_role("textbox", name="Search the Hub").fill("bert")
            page.get_by_role("textbox", name="Search the Hub").press("Enter")
            page.get_by_text("cannot be reached").first.wait_for()
            page.get_by_text("hf:standin-org/tiny-llama").first.wait_for()  # the cache is still listed
            shot(page, "registry-offline")
        finally:
            studio.kill()
    assert (ARTIFACTS / "registry-offline.png").is_file()
