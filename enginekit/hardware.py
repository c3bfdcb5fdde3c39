"""What machine this is, for manifests and reports: CPU model and the ISA extensions that pick kernels."""

from __future__ import annotations

import platform
from functools import cache
from pathlib import Path

# The flags that change which ONNX Runtime (MLAS) kernels run: integer GEMM and FP32 paths differ by them.
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8", "amx_bf16", "asimd")


@cache
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_model() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_isa() -> list[str]:
    flags: set[str] = set()
    for line in _cpuinfo().splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
            break
    return [flag for flag in KERNEL_FLAGS if flag in flags]
