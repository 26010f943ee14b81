"""The resource sampler: a reading is the live process tree's, never a dead child's zeros."""

import subprocess
import sys
import time

import psutil

from studio_core.hardware.usage import ProcessSampler, with_peaks


def test_a_running_process_reads_memory_and_an_exited_unreaped_one_reads_none():
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        sampler = ProcessSampler(child.pid)
        reading = sampler.sample()
        assert reading is not None and reading["rss_mb"] > 0 and reading["cpu_percent"] >= 0
        assert reading["gpu_memory_mb"] is None or reading["gpu_memory_mb"] >= 0
        child.stdin.close()  # the child exits; nobody has reaped it yet, so Linux keeps it as a zombie
        deadline = time.monotonic() + 10
        while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert sampler.sample() is None  # not a reading of 0 MB
    finally:
        child.wait()


def test_peaks_keep_the_highest_and_leave_unmeasured_figures_none():
    peaks = with_peaks(None, {"cpu_percent": 50.0, "rss_mb": 100.0, "gpu_memory_mb": None, "gpu_util_percent": None})
    peaks = with_peaks(peaks, {"cpu_percent": 20.0, "rss_mb": 300.0, "gpu_memory_mb": None, "gpu_util_percent": None})
    assert peaks == {"peak_cpu_percent": 50.0, "peak_rss_mb": 300.0, "peak_gpu_memory_mb": None,
                     "peak_gpu_util_percent": None}
