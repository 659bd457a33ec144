"""Downloads that verify what they fetch, and archive extraction that cannot escape its folder.

Everything here fails with one :class:`DatasetError` that says what to do, and never leaves a
partial file under the final name: bytes go to ``<name>.part`` and are renamed only after the
checksum matched.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import re
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path

from kdad.data.base import DatasetError


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: str | os.PathLike, digest: str, algorithm: str = "sha256") -> None:
    """Raise unless ``path`` exists and has the expected digest."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path} does not exist")
    got = file_digest(path, algorithm)
    if got != digest:
        raise DatasetError(f"{path}: {algorithm} is {got}, expected {digest}: the file is corrupt or incomplete; "
                           "delete it and download it again")


def download(url: str, dest: str | os.PathLike, digest: str, algorithm: str = "sha256", *,
             how_to_get: str = "") -> Path:
    """Fetch ``url`` to ``dest`` unless a verified copy is already there; return ``dest``.

    ``how_to_get`` is appended to the error when the network cannot be reached, e.g. which local
    copy to place where.
    """
    dest = Path(dest)
    if dest.is_file():
        verify(dest, digest, algorithm)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        part.unlink(missing_ok=True)
        raise DatasetError(f"could not download {url} ({err}). {how_to_get}".strip()) from err
    try:
        verify(part, digest, algorithm)
    except DatasetError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    return dest


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract a tar(.gz/.xz) or zip archive into ``dest``, refusing absolute paths, ``..`` and links.

    Extraction goes to ``<dest>.partial`` and is renamed to ``dest`` at the end, so a killed run
    leaves no half-extracted tree that looks complete. Both folders carry the marker file
    ``.kdad-extracted``: an existing ``dest`` (or ``.partial``) without it is not kdad's, and is
    refused instead of deleted.
    """
    archive, dest = Path(archive), Path(dest)
    tmp = dest.with_name(dest.name + ".partial")
    _check_ours(tmp, archive)
    _check_ours(dest, archive)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / EXTRACTED_MARKER).write_text(f"extracted by kdad from {archive}\n")
    try:
        try:
            if zipfile.is_zipfile(archive):
                with zipfile.ZipFile(archive) as z:
                    for info in z.infolist():
                        _check_member(info.filename, archive)
                        if (info.external_attr >> 16) & 0o170000 == 0o120000:
                            raise DatasetError(f"{archive}: refusing to extract link {info.filename!r}")
                    z.extractall(tmp)
            else:
                with tarfile.open(archive) as t:
                    members = t.getmembers()
                    for m in members:
                        _check_member(m.name, archive)
                        if not (m.isfile() or m.isdir()):
                            raise DatasetError(f"{archive}: refusing to extract link or device {m.name!r}")
                    t.extractall(tmp, members=members, filter="data")
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, lzma.LZMAError, zlib.error) as err:
            raise DatasetError(f"{archive}: truncated or corrupt archive ({err}); delete it and download it again") from err
        except OSError as err:
            raise DatasetError(f"extracting {archive} into {tmp} failed ({err}): check free disk space and "
                               "permissions") from err
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


EXTRACTED_MARKER = ".kdad-extracted"
LEGACY_MARKERS = (".verified",)  # what earlier versions wrote into the folders they extracted


def _check_ours(folder: Path, archive: Path) -> None:
    """Raise unless ``folder`` is absent or a folder kdad extracted (it holds a marker file)."""
    if not os.path.lexists(folder):
        return
    if folder.is_dir() and not folder.is_symlink() and any(
            (folder / m).is_file() for m in (EXTRACTED_MARKER, *LEGACY_MARKERS)):
        return
    raise DatasetError(f"refusing to extract {archive} into {folder}: it exists and kdad did not create it (no "
                       f"{EXTRACTED_MARKER} marker inside), so it may hold your own files; move it away, or delete it "
                       "if it is a copy kdad may replace")


def extraction_name(archive: Path) -> str:
    """A safe folder name for an archive's contents: its name without archive suffixes, reduced to
    letters, digits, ``_ . -``; an empty or dot-only result (``.hidden.tar``, ``..zip``) gets a
    name from a hash of the archive's path instead, never the parent folder itself."""
    name = archive.name
    while True:
        stem, dot, ext = name.rpartition(".")
        if not dot or ext.lower() not in ("tar", "gz", "tgz", "xz", "txz", "bz2", "tbz2", "zip"):
            break
        name = stem
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")
    if not name:
        name = "archive-" + hashlib.sha256(str(archive.resolve()).encode()).hexdigest()[:10]
    return name


def _check_member(name: str, archive: Path) -> None:
    p = Path(name)
    if p.is_absolute() or ".." in p.parts:
        raise DatasetError(f"{archive}: unsafe path {name!r} in archive; refusing to extract")
