"""Where and with what a number was computed: machine, device, versions, code revision."""

from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
from pathlib import Path

import torch


def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA when available, else the CPU; ``cuda`` without a GPU is an error, not a silent CPU run."""
    from kdad.config import ConfigError

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda is set but torch sees no CUDA device here; use device: auto or cpu")
    return torch.device(device)


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device | None = None) -> dict:
    """CPU model, usable cores, GPU name (empty without one) and the device computed on."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
    return {"device": (device or torch.device("cpu")).type, "machine": cpu_model(), "cores": int(cores or 0),
            "gpu": gpu, "torch_threads": torch.get_num_threads()}


@functools.lru_cache(maxsize=1)
def versions() -> str:
    import numpy
    import sklearn
    import timm
    import torchvision

    return json.dumps({"python": platform.python_version(), "torch": torch.__version__,
                       "torchvision": torchvision.__version__, "timm": timm.__version__, "numpy": numpy.__version__,
                       "scikit-learn": sklearn.__version__}, sort_keys=True)


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The git commit of the checkout (``+dirty`` when kdad/ or baselines/ differ from it), or the
    installed package's version outside a checkout."""
    here = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no", "--",
                                "kdad", "baselines"], capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import PackageNotFoundError, version
        try:
            return "kdad-" + version("kdad")
        except PackageNotFoundError:
            return "unknown"
