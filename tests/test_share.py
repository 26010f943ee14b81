"""`peft-studio studio`: every server option explicit, so the studio is the same whatever folder it starts from."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from studio_core import share
from studio_core.cli import main
from studio_core.uploads import DEFAULT_MAX_BYTES


def _option(command: list[str], key: str) -> str:
    return command[command.index(f"--{key}") + 1]


def test_the_command_passes_the_settings_that_matter_local_and_shared():
    local, shared = share.streamlit_command(8600, share=False), share.streamlit_command(8600, share=True)
    assert local[:4] == [sys.executable, "-m", "streamlit", "run"] and Path(local[4]).is_absolute()
    assert _option(local, "server.address") == "127.0.0.1" and _option(shared, "server.address") == "0.0.0.0"
    for command in (local, shared):
        assert _option(command, "server.enableXsrfProtection") == "true"
        assert _option(command, "runner.postScriptGC") == "false"
        assert _option(command, "browser.gatherUsageStats") == "false"
        assert int(_option(command, "server.maxUploadSize")) * 2**20 > DEFAULT_MAX_BYTES  # the app's check fires
    assert _option(local, "client.showErrorDetails") == "full" and _option(shared, "client.showErrorDetails") == "none"


def test_data_root_without_share_is_refused(tmp_path, capsys):
    assert main(["studio", "--data-root", str(tmp_path), "--home", str(tmp_path)]) == 2
    assert "add --share" in capsys.readouterr().err


def _listening_addresses(port: int) -> set[str]:
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if int(hex_port, 16) == port and state == "0A":  # LISTEN
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


def test_started_from_another_folder_it_listens_on_localhost_only(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-m", "studio_core.cli", "studio", "--port", str(port), "--home",
                             str(tmp_path / "home")], cwd=tmp_path,
                            env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.2)
        assert _listening_addresses(port) == {"127.0.0.1"}
    finally:
        proc.kill()
        proc.wait()
    deadline = time.time() + 30  # the launcher's Streamlit dies with it, however it was killed
    while _listening_addresses(port) and time.time() < deadline:
        time.sleep(0.2)
    assert not _listening_addresses(port), "the studio server outlived its killed launcher"
