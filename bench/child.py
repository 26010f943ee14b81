"""What the benches share: run one side of a comparison in a fresh Python process (so its peak RSS and its
threads are its own) and read the JSON record it prints last."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_child(code: str, args: list[str], what: str = "child") -> dict:
    """`python -c code *args` in the repo root (studio_core importable); its last stdout line as JSON, or exit
    naming `what` with the end of its stderr."""
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, check=False,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    if out.returncode != 0:
        raise SystemExit(f"{what} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
