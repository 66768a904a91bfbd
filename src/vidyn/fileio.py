"""Writing files so that nothing half-written is ever left under the final name.

Every writer in vidyn (configs, exported models, metrics, figures, reports, videos, store shards) goes
through `atomic_path`: the data goes to a temporary file in the destination's own folder (same file
system, so the rename is atomic), is flushed to disk with fsync, then renamed over the destination, and the
rename itself is made durable by an fsync of the folder. A crash or an exception at any point leaves either
the old file or the new one, never a mix, and the temporary file is removed on error.

Temporary names are `.<name>.<random>.tmp<suffix>`: hidden, unique per call (two writers never share one),
and ending in the destination's suffix, because some writers (matplotlib, PyAV) choose the format from it.

A write that fails because the disk is full, the quota is spent, the file system is read-only or the folder
may not be written raises a one-line `VidynError` naming the file, the cause and the fix (`disk_error`),
after removing the temporary file; the previous file under the final name is untouched. Libraries report
these failures in their own ways: an `OSError` with its errno (Python, PyAV, Pillow, torch.save), a
safetensors error whose message ends in `(os error 28)`, and numpy's `np.save` into a file object, which
raises `OSError('N requested and M written')` without an errno (then the free space tells a full disk).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vidyn.errors import VidynError

TEMP_GLOB = ".*.tmp*"  # what a killed writer may leave behind (for clean-up of a folder vidyn owns)

_ELSEWHERE = "write to another folder"
_DISK_CAUSES: dict[int | str, tuple[str, str]] = {  # errno -> (cause, fix)
    errno.ENOSPC: ("no space is left on its disk", f"free some space there or {_ELSEWHERE}"),
    errno.EDQUOT: ("your disk quota there is used up", f"free some space or {_ELSEWHERE}"),
    errno.EFBIG: ("the file exceeds the largest allowed there (file system or ulimit -f)", _ELSEWHERE),
    errno.EROFS: ("its folder is on a read-only file system", "write to a writable folder"),
    errno.EACCES: ("permission denied", f"fix the folder's permissions or {_ELSEWHERE}"),
    errno.EPERM: ("operation not permitted", f"fix the folder's permissions or {_ELSEWHERE}"),
    "short": (
        "the write stopped short (a full disk, a quota or a file size limit)",
        f"free some space there or {_ELSEWHERE}",
    ),
}
_LOW_SPACE = 1 << 20  # bytes: a short write with less free than this is a full disk
_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")  # numpy's message, which has no errno


def disk_error(path: str | os.PathLike, exc: BaseException) -> VidynError | None:
    """A one-line error for a write to `path` that failed for lack of space or permission, else None."""
    code: int | str | None = getattr(exc, "errno", None) if isinstance(exc, OSError) else None
    if code is None:
        found = re.search(r"os error (\d+)\)", str(exc))  # safetensors (Rust) reports the OS error in text
        code = int(found.group(1)) if found else None
    if code is None and isinstance(exc, OSError) and _SHORT_WRITE.search(str(exc)):
        code = errno.ENOSPC if _free_bytes(Path(path).parent) < _LOW_SPACE else "short"
    if code not in _DISK_CAUSES:
        return None
    cause, fix = _DISK_CAUSES[code]
    return VidynError(f"cannot write {str(path)!r}: {cause} (any earlier file there is unchanged); {fix}")


def _free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return _LOW_SPACE  # cannot tell: not a disk error


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
    temporary file is deleted and `path` is untouched; a full disk or a folder that may not be written
    becomes a one-line VidynError (`disk_error`). The parent folder must exist.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    except OSError as e:
        error = disk_error(path, e)
        if error is None:
            raise
        raise error from e
    os.close(fd)
    try:
        yield Path(tmp)
        fsync_path(tmp)
        _rename(tmp, path)
        fsync_path(path.parent)
    except Exception as e:  # the caller's writer may wrap the OS error in its own type (safetensors)
        error = disk_error(path, e)
        if error is None:
            raise
        raise error from e
    finally:
        _remove_quietly(tmp)


def _remove_quietly(tmp: str) -> None:
    """Delete the temporary file if it is still there; a failed removal (the folder made read-only
    meanwhile) must not hide the error that brought us here."""
    with contextlib.suppress(OSError):
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
