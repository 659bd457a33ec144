"""Where and with what a number was computed: machine, device, versions, code revision.

Code provenance of a result row (``docs/results.md``):

* ``code_version``: the git commit, ``+dirty`` when the code differs from it (for people);
* ``code_fingerprint``: a hash of the *contents* of every file that can change a number
  (``CODE_PATHS``: kdad/, baselines/, rules/, the Snakefile; tracked and untracked, git-ignored files
  such as ``__pycache__`` excluded).  It is not the commit, so committing results alone leaves it
  unchanged, and ``kdad check-results`` can tell results made by the current code from stale ones;
* ``code_clean``: whether those paths had no uncommitted change (a dirty tree's code cannot be
  recovered from any commit).

The resolved configuration is covered by the row's ``config_hash``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import subprocess
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
# every path whose contents can change a number in results/ (the config is hashed on its own)
CODE_PATHS = ("kdad", "baselines", "rules", "Snakefile")
_SKIP_PARTS = {"__pycache__", ".pytest_cache"}


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


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30,
                          check=True).stdout


def code_files(root: Path = ROOT) -> list[str]:
    """The files ``code_fingerprint`` hashes, relative to ``root`` and sorted: in a git checkout the
    tracked and untracked, not ignored, files under ``CODE_PATHS``; elsewhere every file under them
    but caches (``__pycache__``, ``*.pyc``)."""
    root = Path(root)
    try:
        out = _git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *CODE_PATHS)
        names = {n for n in out.split("\0") if n}
    except (OSError, subprocess.SubprocessError):
        names = set()
        for part in CODE_PATHS:
            base = root / part
            found = [base] if base.is_file() else base.rglob("*") if base.is_dir() else []
            names |= {f.relative_to(root).as_posix() for f in found if f.is_file()}
    return sorted(n for n in names if (root / n).is_file() and not n.endswith(".pyc")
                  and not _SKIP_PARTS & set(Path(n).parts))


def fingerprint_files(root: Path, names: list[str]) -> str:
    """16 hex digits of a SHA-256 over (path, SHA-256 of its bytes) of every named file, in order."""
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode("utf-8") + b"\0" + hashlib.sha256((Path(root) / name).read_bytes()).digest())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def code_fingerprint(root: Path = ROOT) -> str:
    """The content hash of the code that can change a number (see the module docstring)."""
    return fingerprint_files(root, code_files(root))


@functools.lru_cache(maxsize=1)
def code_clean(root: Path = ROOT) -> bool | None:
    """True when ``CODE_PATHS`` have no uncommitted change (untracked files included); None outside a
    git checkout (nothing to compare with)."""
    try:
        _git(root, "rev-parse", "HEAD")
        return not _git(root, "status", "--porcelain", "--untracked-files=all", "--", *CODE_PATHS).strip()
    except (OSError, subprocess.SubprocessError):
        return None


def code_provenance() -> dict:
    """The code columns of a result row: ``code_version``, ``code_fingerprint``, ``code_clean``."""
    return {"code_version": code_version(), "code_fingerprint": code_fingerprint(), "code_clean": code_clean()}
