"""What a running job uses: CPU %, resident memory (its whole process tree) and, where NVML answers, GPU memory
and utilisation. The studio's supervisor samples its job every few seconds into the run dir.

GPU figures: the memory the job's processes hold on each GPU (NVML's per-process accounting) and the busiest
GPU's utilisation. Without an NVIDIA driver both are absent (None), never zero.
"""

from __future__ import annotations

from typing import Any

import psutil

_MB = 1024**2


class ProcessSampler:
    """Samples one process and its children; `sample()` after the first call gives CPU % since the last one."""

    def __init__(self, pid: int):
        self.process = psutil.Process(pid)
        self._known: dict[int, psutil.Process] = {}
        self._nvml = _init_nvml()
        self.sample()  # prime cpu_percent: its first reading is always 0

    def _tree(self) -> list[psutil.Process]:
        try:
            procs = [self.process, *self.process.children(recursive=True)]
        except psutil.Error:
            return []
        tree = []
        for p in procs:  # keep the same Process objects, so cpu_percent measures since their last call
            tree.append(self._known.setdefault(p.pid, p))
        return tree

    def sample(self) -> dict[str, Any] | None:
        """One reading, or None when the process is gone."""
        tree = self._tree()
        if not tree:
            return None
        cpu = rss = 0.0
        measured = 0
        for p in tree:
            try:
                if p.status() == psutil.STATUS_ZOMBIE:
                    continue  # exited, not yet reaped: Linux reports it as 0 MB, which is not a reading
                cpu_p, rss_p = p.cpu_percent(interval=None), p.memory_info().rss
            except psutil.Error:
                continue  # a child that just exited
            if rss_p == 0:  # it exited between the status check and the reading: 0 MB is not a reading either
                continue
            cpu, rss, measured = cpu + cpu_p, rss + rss_p, measured + 1
        if not measured:  # the whole tree exited between listing and reading it (or is waiting to be reaped)
            return None
        reading: dict[str, Any] = {"cpu_percent": round(cpu, 1), "rss_mb": round(rss / _MB, 1),
                                   "gpu_memory_mb": None, "gpu_util_percent": None}
        if self._nvml is not None:
            reading.update(_gpu_reading(self._nvml, {p.pid for p in tree}))
        return reading


def _init_nvml():
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml if pynvml.nvmlDeviceGetCount() > 0 else None
    except Exception:  # noqa: BLE001 - no NVIDIA driver or library: no GPU figures, which is what "None" means
        return None


def _gpu_reading(pynvml, pids: set[int]) -> dict[str, Any]:
    memory, util = 0, None
    for index in range(pynvml.nvmlDeviceGetCount()):
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid in pids and proc.usedGpuMemory:
                    memory += proc.usedGpuMemory
            rate = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
            util = rate if util is None else max(util, rate)
        except pynvml.NVMLError:
            continue  # a device that refuses one query: the others still count
    return {"gpu_memory_mb": round(memory / _MB, 1), "gpu_util_percent": util}


PEAK_FIELDS = (("cpu_percent", "peak_cpu_percent"), ("rss_mb", "peak_rss_mb"), ("gpu_memory_mb", "peak_gpu_memory_mb"),
               ("gpu_util_percent", "peak_gpu_util_percent"))


def with_peaks(peaks: dict[str, Any] | None, reading: dict[str, Any]) -> dict[str, Any]:
    """The highest of each figure so far, `reading` included (None where it was never measured)."""
    out = dict(peaks or {})
    for key, name in PEAK_FIELDS:
        value, best = reading.get(key), out.get(name)
        out[name] = best if value is None else value if best is None else max(best, value)
    return out
