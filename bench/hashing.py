"""Studio streaming sha256 (studio_core.digest.sha256_file, 1 MiB chunks) vs `sha256sum` on the same files.

Generates N files of M MiB of random bytes in a temp dir, then times each side hashing all of them, best of
R rounds, alternating studio / sha256sum so both see the same page-cache state. Checks both give the same
digests, prints MB/s and the ratio (target: studio >= 0.9x sha256sum) and writes bench/results/hashing.json.

    .venv/bin/python bench/hashing.py [--files 4] [--mib 256] [--rounds 3] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from studio_core.digest import CHUNK, sha256_file
from studio_core.runs import utc_now

RESULTS = Path(__file__).resolve().parent / "results" / "hashing.json"
TARGET = 0.9


def make_files(folder: Path, count: int, mib: int) -> list[Path]:
    """`count` files of `mib` MiB each, filled with random bytes (one random MiB block varied per MiB)."""
    block = bytearray(os.urandom(1 << 20))
    paths = []
    for i in range(count):
        path = folder / f"shard-{i:02d}.bin"
        with open(path, "wb") as f:
            for j in range(mib):
                block[:8] = (i * mib + j).to_bytes(8, "little")  # no two MiB blocks alike
                f.write(block)
        paths.append(path)
    return paths


def time_studio(paths: list[Path]) -> tuple[float, dict[str, str]]:
    start = time.perf_counter()
    digests = {p.name: sha256_file(p) for p in paths}
    return time.perf_counter() - start, digests


def time_sha256sum(paths: list[Path]) -> tuple[float, dict[str, str]]:
    start = time.perf_counter()
    out = subprocess.run(["sha256sum", *map(str, paths)], check=True, capture_output=True, text=True).stdout
    elapsed = time.perf_counter() - start
    digests = {Path(line.split(maxsplit=1)[1].lstrip("*")).name: line.split()[0] for line in out.splitlines()}
    return elapsed, digests


def run(count: int, mib: int, rounds: int, folder: Path) -> dict:
    paths = make_files(folder, count, mib)
    total_mb = count * mib * (1 << 20) / 1e6
    studio, coreutils = [], []
    for _ in range(rounds):
        seconds, ours = time_studio(paths)
        studio.append(seconds)
        seconds, theirs = time_sha256sum(paths)
        coreutils.append(seconds)
        assert ours == theirs, "studio and sha256sum disagree on a digest"
    best_studio, best_sum = min(studio), min(coreutils)
    return {
        "time": utc_now(), "files": count, "mib_per_file": mib, "rounds": rounds, "chunk_bytes": CHUNK,
        "studio_mb_s": round(total_mb / best_studio, 1), "sha256sum_mb_s": round(total_mb / best_sum, 1),
        "ratio": round(best_sum / best_studio, 3), "target_ratio": TARGET,
        "studio_s": [round(s, 3) for s in studio], "sha256sum_s": [round(s, 3) for s in coreutils],
        "python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where to write the files (default: a temp dir)")
    args = parser.parse_args()
    if shutil.which("sha256sum") is None:
        raise SystemExit("sha256sum not found (coreutils); install it to run this benchmark")
    folder = Path(tempfile.mkdtemp(prefix="hash-bench-", dir=args.dir))
    try:
        result = run(args.files, args.mib, args.rounds, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"{'hasher':<12}{'MB/s':>10}{'best s':>10}")
    print(f"{'studio':<12}{result['studio_mb_s']:>10}{min(result['studio_s']):>10}")
    print(f"{'sha256sum':<12}{result['sha256sum_mb_s']:>10}{min(result['sha256sum_s']):>10}")
    verdict = "meets" if result["ratio"] >= TARGET else "misses"
    print(f"ratio studio/sha256sum: {result['ratio']}x ({verdict} the {TARGET}x target)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
