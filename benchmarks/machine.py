"""Where numbers were measured: OS, CPU, library versions and, when present, the GPU, driver, CUDA and TensorRT."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

TRT_DISTRIBUTIONS = ("tensorrt", "tensorrt-rtx", "tensorrt_rtx")  # pip names; read without importing (slow)


def cpu_name() -> str:
    """CPU model from /proc/cpuinfo, else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _driver_version() -> str | None:
    """NVIDIA kernel driver version from /proc (Linux), None without a driver."""
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
    except OSError:
        return None
    for word in text.split():
        if word.count(".") >= 1 and word.replace(".", "").isdigit():
            return word
    return None


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def gpu_info() -> dict[str, Any]:
    """GPU name, driver, CUDA and TensorRT versions; only what is present (empty dict on a CPU-only machine)."""
    info: dict[str, Any] = {}
    driver = _driver_version()
    if driver:
        info["nvidia_driver"] = driver
    torch = sys.modules.get("torch")  # imported by the command that needs it; never imported here just to ask
    if torch is not None and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    compute_capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda)
    for dist in TRT_DISTRIBUTIONS:
        version = _dist_version(dist)
        if version:
            info["tensorrt"] = f"{dist} {version}"
            break
    return info


def machine_info() -> dict[str, Any]:
    """Where the numbers were measured: OS, CPU, library versions, thread counts, GPU when present."""
    info: dict[str, Any] = {
        "platform": platform.platform(), "python": platform.python_version(), "cpu": cpu_name(),
        "cpu_count": os.cpu_count(), "numpy": np.__version__,
    }
    if hasattr(os, "sched_getaffinity"):
        info["cpu_affinity"] = len(os.sched_getaffinity(0))  # cores this process may use (containers, taskset)
    for mod in ("av", "cv2"):
        if mod in sys.modules or importlib.util.find_spec(mod) is not None:
            lib = __import__(mod)
            info["opencv" if mod == "cv2" else mod] = lib.__version__
            if mod == "cv2":
                info["opencv_threads"] = lib.getNumThreads()
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    if "onnxruntime" in sys.modules:
        info["onnxruntime"] = sys.modules["onnxruntime"].__version__
    info.update(gpu_info())
    return info
