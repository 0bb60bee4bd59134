"""Atomic file output: a reader sees the old file or the new one, never a part of either.

Every file nudgekit writes goes through :func:`atomic_file`: the bytes go to a new
temporary file in the destination directory — created exclusively (``mkstemp``:
``O_CREAT | O_EXCL``), so a planted file or link at a predictable name is never followed
— and the temporary file is renamed over the destination once complete. On any error the
temporary file is removed and the destination is left as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

#: Mode of new files: what ``open()`` would give under this process's umask.
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK


@contextmanager
def atomic_file(
    path: str | os.PathLike[str], mode: str = "wb", *, durable: bool = False
) -> Iterator[IO[Any]]:
    """A file object whose content replaces ``path`` when the block ends without error.

    ``durable`` flushes the file and the directory to disk (for state that must survive a
    power cut, e.g. a store's bookkeeping); without it the rename is still atomic for
    every other process.
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(target.parent)


def write_bytes(path: str | os.PathLike[str], data: bytes, *, durable: bool = False) -> None:
    """Replace ``path`` with ``data``, atomically."""
    with atomic_file(path, durable=durable) as f:
        f.write(data)


def write_json(path: str | os.PathLike[str], data: Any, *, durable: bool = False) -> None:
    """Replace ``path`` with ``data`` as indented JSON, atomically."""
    write_bytes(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"), durable=durable)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename in ``path`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A new directory whose content replaces ``path`` as a whole when the block ends.

    Files are written into a temporary sibling (``mkdtemp``: never a planted name); on
    success the old ``path`` is moved aside and the new one renamed into place (two
    renames: a reader sees the old folder, the new one, or — for an instant — none, never
    a mix), then the old one is removed. On any error the temporary folder is removed and
    ``path`` is left as it was.
    """
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise ValueError(f"{target} exists and is not a directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        os.chmod(work, 0o777 & ~_UMASK)
        yield work
        old = None
        if target.exists():
            old = Path(
                tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent)
            )
            os.replace(target, old / "was")
        os.replace(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
