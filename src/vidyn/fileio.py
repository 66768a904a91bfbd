"""Writing files so that nothing half-written is ever left under the final name.

Every writer in vidyn (configs, exported models, metrics, figures, reports, videos, store shards) goes
through `atomic_path`: the data goes to a temporary file in the destination's own folder (same file
system, so the rename is atomic), is flushed to disk with fsync, then renamed over the destination, and the
rename itself is made durable by an fsync of the folder. A crash or an exception at any point leaves either
the old file or the new one, never a mix, and the temporary file is removed on error.

Temporary names are `.<name>.<random>.tmp<suffix>`: hidden, unique per call (two writers never share one),
and ending in the destination's suffix, because some writers (matplotlib, PyAV) choose the format from it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TEMP_GLOB = ".*.tmp*"  # what a killed writer may leave behind (for clean-up of a folder vidyn owns)


def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file or a folder (a folder's fsync makes renames inside it durable; a no-op on Windows)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if Path(path).is_dir() else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:  # e.g. folders cannot be opened on Windows
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rename(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    os.replace(tmp, path)  # one place, so crash tests can stop a writer right before or after it


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block succeeds, fsync it and rename it to `path`.

    The caller writes the whole file to the yielded path (by name, with any library). On an exception the
    temporary file is deleted and `path` is untouched. The parent folder must exist.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        yield Path(tmp)
        fsync_path(tmp)
        _rename(tmp, path)
        fsync_path(path.parent)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2) + "\n")
