"""Hardware detection: what this machine can train with, and the precision to use."""

from studio_core.hardware.profile import (
    CACHE_SECONDS,
    GpuInfo,
    HardwareProfile,
    Precision,
    best_precision,
    format_profile,
    hardware_profile,
)

__all__ = [
    "CACHE_SECONDS",
    "GpuInfo",
    "HardwareProfile",
    "Precision",
    "best_precision",
    "format_profile",
    "hardware_profile",
]
