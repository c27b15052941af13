"""What this machine can do: cores, memory, a GPU if one is found (read once at start)."""

from __future__ import annotations

import os
from pathlib import Path


def memory_mb() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def gpu_name() -> str:
    """The first NVIDIA GPU's model from the driver's /proc entry; "" when there is none."""
    root = Path("/proc/driver/nvidia/gpus")
    try:
        for d in sorted(root.iterdir()):
            for line in (d / "information").read_text().splitlines():
                if line.startswith("Model:"):
                    return line.split(":", 1)[1].strip()[:64]
    except OSError:
        pass
    return ""


def cpu_cores() -> int:
    return os.cpu_count() or 1
