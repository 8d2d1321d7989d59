"""Describe the machine a benchmark ran on, and name its results folder after it."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

import psutil


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """CPU cores this process may run on (the affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def describe_machine(device: str = "cpu") -> dict:
    """CPU model, usable cores, RAM, OS, Python, torch, and the GPU when ``device`` is CUDA."""
    import torch

    info = {
        "cpu": _cpu_model(),
        "cores": usable_cores(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device,
        "gpu": None,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        info["gpu"] = properties.name
        info["gpu_memory_gib"] = round(properties.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
    return info


def machine_slug(info: dict) -> str:
    """Folder name for results: ``gpu-<gpu name>`` or ``cpu-<N>cores``, lower-case, dashes only."""
    if info.get("gpu"):
        name = "gpu-" + str(info["gpu"])
    else:
        name = f"cpu-{info['cores']}cores"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
