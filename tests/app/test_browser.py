"""The studio in a real browser (Debian's Chromium driven by Playwright): upload, run, watch, share, download.

Needs /usr/bin/chromium (`make setup` installs it where apt-get can); skipped, saying so, where it is absent.
Screenshots go to $PEFT_STUDIO_TEST_ARTIFACTS (default: test-artifacts/ in the repo).
"""

from __future__ import annotations

import os
import json
import re
import zipfile
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
    page.get_by_role("heading", name="PEFT Studio").wait_for()
    return page


def go(page, title: str) -> None:
    page.get_by_role("link", name=title, exact=True).first.click()
    page.get_by_role("heading", name="PEFT Studio" if title == "Home" else title, exact=True).wait_for()


def set_text(page, label: str, value: str) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(value)
    box.press("Enter")
    page.wait_for_timeout(1000)  # let the rerun that commits the value finish


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def shown_run_id(page) -> str:
    heading = page.locator("h3").filter(has_text=RUN_ID).first
    heading.wait_for()
    return RUN_ID.search(heading.inner_text()).group(0)


def small_demo(page) -> None:
    """A tiny model and 200 demo rows: the whole pipeline in about a minute."""
    go(page, "1. Data Resolve")
    page.get_by_text("More settings").first.click()
    set_text(page, "Demo dataset rows", "200")
    go(page, "2. Model Resolve")
    set_text(page, "Base model", "tiny-random:llama")


def test_upload_a_jsonl_file_run_it_in_simulation_and_a_teammate_cancels_it(studio, browser, tmp_path):
    rows = [{"instruction": f"Add {i} and {i + 1}.", "output": f"{2 * i + 1}"} for i in range(120)]
    upload = tmp_path / "sums.jsonl"
    upload.write_text("".join(json.dumps(r) + "\n" for r in rows))
    page = open_page(browser.new_context(viewport={"width": 1400, "height": 1000}), studio.url)
    go(page, "1. Data Resolve")
    uploader = page.get_by_test_id("stFileUploader").filter(has_text="Upload your data file")
    uploader.locator("input[type=file]").set_input_files(str(upload))
    saved = studio.home / "uploads" / "sums.jsonl"
    page.get_by_text("the training data file below now points at it").wait_for()
    from playwright.sync_api import expect  # the field below the message is redrawn a moment after it

    expect(page.get_by_label("Training data file", exact=True)).to_have_value(str(saved), timeout=30_000)
    shot(page, "upload-step1")
    go(page, "2. Model Resolve")
    set_text(page, "Base model", "tiny-random:llama")
    page.get_by_text("Simulation (tiny model, seconds)", exact=True).click()
    page.wait_for_timeout(1000)
    page.get_by_role("button", name="Start", exact=True).click()
    page.get_by_role("heading", name="6. Training Exec", exact=True).wait_for()  # Start takes you to the run
    run_id = shown_run_id(page)
    config = json.loads((studio.home / "runs" / run_id / "config.json").read_text())
    assert config["data"]["path"] == str(saved) and config["simulate"] is True  # what Start submitted

    teammate = open_page(browser.new_context(viewport={"width": 1400, "height": 1000}), studio.url)
    go(teammate, "6. Training Exec")
    assert shown_run_id(teammate) == run_id  # another browser sees the studio's run
    teammate.get_by_role("button", name="Cancel run").click()
    teammate.get_by_text("It was started from another browser").wait_for()  # asks first
    shot(teammate, "upload-teammate-cancel-confirm")
    teammate.get_by_role("button", name="Yes, cancel it").click()
    page.get_by_text(f"{run_id} (simulation): cancelled").wait_for(timeout=120_000)
    page.get_by_text("Cancelled (asked by browser-").wait_for()
    events = [json.loads(line) for line in (studio.home / "runs" / run_id / "events.jsonl").read_text().splitlines()]
    asked = [e for e in events if e["type"] in ("cancel_requested", "run_cancelled") and e.get("requested_by")]
    assert asked and asked[0]["requested_by"].startswith("browser-")
    shot(page, "upload-cancelled")


def test_the_demo_quick_start_runs_to_completion_a_teammate_watches_and_the_adapter_downloads(studio, browser):
    page = open_page(browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True), studio.url)
    small_demo(page)
    go(page, "Home")
    page.get_by_role("button", name="Run the demo simulation").click()
    page.get_by_role("heading", name="6. Training Exec", exact=True).wait_for()
    run_id = shown_run_id(page)

    teammate = open_page(browser.new_context(viewport={"width": 1400, "height": 1000}), studio.url)
    go(teammate, "6. Training Exec")
    teammate.get_by_text(re.compile(r"^Step 6, Training Exec: step \d+/12")).wait_for(timeout=180_000)  # live
    assert shown_run_id(teammate) == run_id
    shot(teammate, "demo-teammate-live")

    page.get_by_text(re.compile(r"^Completed: final training loss")).wait_for(timeout=300_000)
    shot(page, "demo-completed")
    with page.expect_download() as download:
        page.get_by_role("button", name="Download the adapter (.zip)").click()
    archive = download.value.path()
    assert any(n.endswith("adapter/adapter_model.safetensors") for n in zipfile.ZipFile(archive).namelist())
    go(page, "8. Evaluation")
    page.get_by_text("Results of the last run").wait_for()
    page.get_by_role("cell", name="validation perplexity").wait_for()  # the base-vs-tuned table
    page.get_by_text(re.compile(r"^Tuned: verdict accuracy [0-9.]+ is (NOT )?above the majority-class baseline")).wait_for()
    page.get_by_text("Verdict accuracy per rule").wait_for()
    shot(page, "demo-step8-results")


def job_pid(home: Path, run_id: str) -> int:
    job = home / "runs" / run_id / "job.json"
    deadline = time.time() + 60
    while not job.is_file():
        assert time.time() < deadline, "the studio never started the run's process"
        time.sleep(0.2)
    return json.loads(job.read_text())["pid"]


def test_killed_job_process_leaves_the_studio_up_and_resume_finishes_the_run(studio, browser):
    page = open_page(browser.new_context(viewport={"width": 1400, "height": 1000}), studio.url)
    go(page, "2. Model Resolve")
    set_text(page, "Base model", "tiny-random:llama")
    go(page, "6. Training Exec")
    set_text(page, "Training steps", "30")
    page.get_by_role("button", name="Start", exact=True).click()
    page.get_by_role("heading", name="6. Training Exec", exact=True).wait_for()
    run_id = shown_run_id(page)
    page.get_by_text(re.compile(r"^Step 6, Training Exec: step [1-9]\d*/30")).wait_for(timeout=180_000)  # training
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
    shot(teammate, "studio-killed-job")
    teammate.get_by_role("button", name="Resume").click()
    teammate.get_by_test_id("stMainBlockContainer").get_by_text(f"{run_id}: completed").wait_for(timeout=600_000)
    shot(teammate, "studio-resumed-run")
