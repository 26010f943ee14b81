"""The Chat and Compile pages in Chromium, on a finished tiny run: both models answer, streamed from the chat
worker process, while other pages stay usable; the compile page shows the engines, their parity and downloads."""

from __future__ import annotations

import pytest

from tests.app.test_browser import CHROMIUM, Studio, browser, go, open_page, shot  # noqa: F401 - fixture

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium not installed (make setup does it)")


def test_chat_page_answers_with_both_models_and_compile_page_shows_the_engines(browser, tiny_compiled_run):  # noqa: F811
    from studio_core.chat import ChatSession, Sampling

    studio = Studio(tiny_compiled_run.path.parent.parent).start()
    try:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = open_page(context, studio.url)
        go(page, "Chat")
        page.get_by_text("peft-studio chat").first.wait_for()
        box = page.get_by_placeholder("Message both models")
        box.fill("Clause: payment within 30 days. Verdict?")
        box.press("Enter")
        other = open_page(context, studio.url)  # another page works while the worker loads and generates
        go(other, "Runs")
        # The runs table's grid holds the id in a hidden accessibility cell too; the run picker shows it.
        other.get_by_text(tiny_compiled_run.run_id).filter(visible=True).first.wait_for()
        page.get_by_text("answered in").nth(1).wait_for(timeout=240_000)  # both sides
        shot(page, "chat-page")
        expected = ChatSession(tiny_compiled_run.path).answer(
            "tuned", [{"role": "user", "content": "Clause: payment within 30 days. Verdict?"}],
            sampling=Sampling(max_new_tokens=128))
        assert expected[:20] in page.inner_text("body")
        go(page, "10. Compile")
        page.get_by_text("Parity: logits against the fp32 merged model").wait_for()
        for text in ("model-q8_0.gguf", "(int8)", "Download the Modelfile", "Download onnx_kv-int8 (.zip)"):
            page.get_by_text(text).first.wait_for()
        page.mouse.wheel(0, 600)
        shot(page, "compile-page")
    finally:
        studio.kill()
