"""Hardware detection: what this machine can train with, and the precision to use."""

from studio_core.hardware.cuda_check import CudaCheck, DeviceResult, DtypeResult, cuda_check_rows, validate_cuda
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
    "CudaCheck",
    "DeviceResult",
    "DtypeResult",
    "GpuInfo",
    "HardwareProfile",
    "Precision",
    "best_precision",
    "cuda_check_rows",
    "format_profile",
    "hardware_profile",
    "validate_cuda",
]
