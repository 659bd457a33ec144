"""Writes that are whole or absent: every file kdad produces is written to a temporary file beside
its destination and renamed over it, so a kill or a full disk never leaves a half-written result
that a rerun would take for a finished one. A failed write removes its temporary file."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

#: errno values that mean "the disk (or quota) is full": reported as one clear message by the CLI
DISK_FULL = {errno.ENOSPC, errno.EDQUOT} if hasattr(errno, "EDQUOT") else {errno.ENOSPC}


def write_atomic(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> Path:
    """Call ``write(f)`` on a binary file opened beside ``path``; rename it onto ``path`` when
    ``write`` returns, delete it when anything fails (the old ``path``, if any, stays whole)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
        os.chmod(tmp, 0o644)  # mkstemp makes it private; results are shared files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_bytes_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """``data`` (text is UTF-8 encoded) into ``path``, whole or not at all."""
    blob = data.encode("utf-8") if isinstance(data, str) else data
    return write_atomic(path, lambda f: f.write(blob))


def copy_atomic(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """A copy of ``src`` at ``dst``, whole or not at all."""
    def copy(f: IO[bytes]) -> None:
        with open(src, "rb") as s:
            while chunk := s.read(1 << 20):
                f.write(chunk)
    return write_atomic(dst, copy)


def is_disk_full(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in DISK_FULL
