"""A shared studio in a real browser: without the token nothing but the login; with it the studio, and a typed
path outside the allowed roots refused with the reason. One studio, started by `peft-studio studio --share`
from another folder, serves the three checks."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.app.test_browser import ARTIFACTS, CHROMIUM, browser, free_port, go, set_text  # noqa: F401 - fixture

ROOT = Path(__file__).resolve().parents[2]
SEEDED = "20261201-000000-seeded-run-abcd"
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium not installed (make setup does it)")


@pytest.fixture
def shared_studio(tmp_path):
    from studio_core import share
    from studio_core.config import RunConfig
    from studio_core.runs import RunStore

    home, data = tmp_path / "home", tmp_path / "data"
    data.mkdir()
    RunStore(home).create(RunConfig().model_dump_json(), SEEDED, ["data"], simulated=True)  # run data to hide
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "studio_core.cli", "studio", "--share", "--port", str(port),
                             "--home", str(home), "--data-root", str(data)], cwd=tmp_path,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        printed = proc.stdout.readline().strip()  # the first URL with the token
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.2)
        yield url, share.read_token(home), printed, tmp_path
    finally:
        proc.kill()
        proc.wait()
    # Its Streamlit server, which browser sessions were connected to, dies with the killed launcher.
    from tests.test_share import _listening_addresses

    deadline = time.time() + 30
    while _listening_addresses(port) and time.time() < deadline:
        time.sleep(0.2)
    assert not _listening_addresses(port), "the shared studio's server outlived its killed launcher"


def test_shared_studio_needs_its_token_and_refuses_paths_outside_its_roots(shared_studio, browser):  # noqa: F811
    url, token, printed, tmp_path = shared_studio
    assert printed.endswith(f"/?token={token}")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    stranger = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    stranger.set_default_timeout(60_000)
    for path in ("/", "/runs"):
        stranger.goto(url + path)
        stranger.get_by_label("Access token", exact=True).wait_for()
        stranger.wait_for_timeout(500)
        body = stranger.inner_text("body")
        assert SEEDED not in body and "Data Resolve" not in body and "Studio home" not in body, body
    stranger.screenshot(path=str(ARTIFACTS / "shared-studio-login.png"))

    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.set_default_timeout(60_000)
    page.goto(f"{url}/?token={token}")
    page.get_by_role("heading", name="The steps").wait_for()  # the home page
    go(page, "Runs")  # the token is kept for the session: page switches and reloads need no login
    page.get_by_text("Runs (1)", exact=True).wait_for()
    page.wait_for_url(re.compile(rf"/runs\?(.*&)?token={token}"))  # beside the draft's id
    page.reload()
    page.get_by_text("Runs (1)", exact=True).wait_for()
    go(page, "1. Data Resolve")
    outside = tmp_path / "outside.jsonl"
    outside.write_text('{"prompt": "a", "completion": "b"}\n')
    set_text(page, "Training data file", str(outside))
    page.locator("section[data-testid='stSidebar']").get_by_text(
        "outside the folders this shared studio may read").first.wait_for()
    assert page.get_by_role("button", name="Start").is_disabled()
    page.screenshot(path=str(ARTIFACTS / "shared-studio-path-refused.png"))
