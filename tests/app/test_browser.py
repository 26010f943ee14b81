"""The studio in a real browser (Debian's Chromium driven by Playwright): walk the wizard, run, watch, share.

Needs /usr/bin/chromium (`make setup` installs it where apt-get can); skipped, saying so, where it is absent.
Screenshots go to $PEFT_STUDIO_TEST_ARTIFACTS (default: test-artifacts/ in the repo).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("PEFT_STUDIO_TEST_ARTIFACTS", ROOT / "test-artifacts"))
RUN_ID = re.compile(r"\d{8}-\d{6}-[a-z0-9-]+-[0-9a-f]{4}")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium not installed (make setup does it)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Studio:
    """`streamlit run app/main.py` on a free localhost port, in its own process."""

    def __init__(self, home: Path):
        self.home, self.port, self.proc = home, free_port(), None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Studio:
        env = {**os.environ, "PEFT_STUDIO_HOME": str(self.home)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(ROOT / "app" / "main.py"), "--server.headless", "true",
             "--server.port", str(self.port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=1).read() == b"ok":
                    return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("studio did not start")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture
def studio(tmp_path):
    s = Studio(tmp_path / "home").start()
    yield s
    if s.proc.poll() is None:
        s.kill()


def open_page(context, url: str):
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    page.get_by_role("heading", name="1. Data Resolve").wait_for()
    return page


def go(page, title: str) -> None:
    page.get_by_role("link", name=title).click()
    page.get_by_role("heading", name=title, exact=True).wait_for()


def set_text(page, label: str, value: str) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(value)
    box.press("Enter")
    page.wait_for_timeout(1000)  # let the rerun that commits the value finish


def start_run(page, model: str, simulate: bool, max_steps: int | None = None) -> str:
    go(page, "2. Model Resolve")
    set_text(page, "ref", model)
    if max_steps is not None:
        go(page, "6. Training Exec")
        set_text(page, "max steps", str(max_steps))
    if simulate:
        page.get_by_text("simulation", exact=True).click()
        page.wait_for_timeout(1000)
    page.get_by_role("button", name="Start").click()
    job_line = page.locator("section[data-testid='stSidebar']").get_by_text(RUN_ID)
    job_line.wait_for()  # the sidebar names the queued or running job
    run_id = RUN_ID.search(job_line.inner_text()).group(0)
    go(page, "6. Training Exec")
    return run_id


def loss_points(page) -> int:
    return page.evaluate("""() => { const p = document.querySelector('.js-plotly-plot');
        return p && p.data ? p.data.reduce((n, t) => n + (t.x ? t.x.length : 0), 0) : 0; }""")


def test_walk_the_wizard_run_a_simulation_and_a_teammate_sees_it(studio, browser):
    first = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = open_page(first, studio.url)
    for title in ["2. Model Resolve", "3. Pre-flight Check", "4. Training Init", "5. Pruning Aware Init",
                  "8. Evaluation", "12. Evidence Signing", "Hardware"]:
        go(page, title)
    run_id = start_run(page, "tiny-random:llama", simulate=True)
    page.get_by_text(f"{run_id} (simulation): completed").wait_for(timeout=180_000)
    assert loss_points(page) > 0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.locator(".js-plotly-plot").first.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "studio-simulation-run.png"))

    teammate = browser.new_context()  # a second browser: a separate session on the same studio
    other = open_page(teammate, studio.url)
    go(other, "Runs")
    other.get_by_text("Runs (1)", exact=True).wait_for()  # the run list, read from disk
    other.get_by_text(f"{run_id} (simulation): completed").wait_for()  # its monitor, read from the run dir


def job_pid(home: Path, run_id: str) -> int:
    import json

    job = home / "runs" / run_id / "job.json"
    deadline = time.time() + 60
    while not job.is_file():
        assert time.time() < deadline, "the studio never started the run's process"
        time.sleep(0.2)
    return json.loads(job.read_text())["pid"]


def test_killed_job_process_leaves_the_studio_up_and_resume_finishes_the_run(studio, browser):
    page = open_page(browser.new_context(viewport={"width": 1400, "height": 1000}), studio.url)
    run_id = start_run(page, "tiny-random:llama", simulate=False, max_steps=30)
    page.get_by_text(re.compile(r"^step [1-9]\d*/30, elapsed")).wait_for(timeout=180_000)  # training has started
    pid = job_pid(studio.home, run_id)
    assert pid != studio.proc.pid  # the run is its own process, not a thread of the studio
    os.kill(pid, signal.SIGKILL)  # what the out-of-memory killer does
    main = page.get_by_test_id("stMainBlockContainer")
    main.get_by_text(f"{run_id}: interrupted").wait_for(timeout=60_000)
    main.get_by_text("SIGKILL").first.wait_for()  # the reason, from the supervisor's record
    assert studio.proc.poll() is None
    assert urllib.request.urlopen(f"{studio.url}/_stcore/health", timeout=5).read() == b"ok"
    teammate = open_page(browser.new_context(viewport={"width": 1400, "height": 1000}), studio.url)
    go(teammate, "Runs")
    teammate.get_by_test_id("stMainBlockContainer").get_by_text(f"{run_id}: interrupted").wait_for()  # still works
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    teammate.screenshot(path=str(ARTIFACTS / "studio-killed-job.png"), full_page=True)
    teammate.get_by_role("button", name="Resume").click()
    teammate.get_by_test_id("stMainBlockContainer").get_by_text(f"{run_id}: completed").wait_for(timeout=600_000)
    teammate.screenshot(path=str(ARTIFACTS / "studio-resumed-run.png"), full_page=True)
