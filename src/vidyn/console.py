"""What vidyn's commands print: their own warnings on one line, no escape codes in a log file, and none
of the native libraries' chatter that says nothing about the user's run.

Library noise is silenced where it starts and only there: `drop_native_lines` holds back the exact lines
a C++ library writes to the process's stderr while a given block runs (the profiler's `USDT ...
profiler_start`), and replays every other line. Python warnings are never ignored wholesale; vidyn's own
(`vidyn.errors.VidynWarning`) stay real warnings that users can filter, printed without the source line
Python's default format appends.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from typing import Any

from vidyn.errors import VidynWarning


def _one_line_format(original: Any) -> Any:
    def format_warning(
        message: Any, category: type[Warning], filename: str, lineno: int, line: Any = None
    ) -> str:
        if issubclass(category, VidynWarning):
            return f"vidyn: warning: {message}\n"
        return original(message, category, filename, lineno, line)

    format_warning.vidyn_one_line = True  # type: ignore[attr-defined]
    return format_warning


def show_vidyn_warnings_on_one_line() -> None:
    """Print `VidynWarning`s as `vidyn: warning: MESSAGE` (Python's format adds the file, line number and
    the source line that raised it: noise to a user); other warnings keep Python's format. Idempotent."""
    if not getattr(warnings.formatwarning, "vidyn_one_line", False):
        warnings.formatwarning = _one_line_format(warnings.formatwarning)


@contextlib.contextmanager
def drop_native_lines(*patterns: bytes) -> Iterator[None]:
    """Hold back the lines written to file descriptor 2 inside the block that match one of `patterns`
    (regular expressions on bytes); every other line is written to stderr when the block ends.

    For C++ libraries that log straight to the descriptor, past Python's `sys.stderr` and its warning
    filters. Lines wait in a temporary file (a pipe could fill and block the writer).
    """
    compiled = [re.compile(p) for p in patterns]
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no descriptor 2 to redirect: nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                sys.stderr.flush()  # what Python code wrote inside the block belongs to the block
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines = held.read().splitlines(keepends=True)
            kept = [ln for ln in lines if not any(p.search(ln) for p in compiled)]
            if kept:
                os.write(2, b"".join(kept))


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask: a container's or `taskset`'s share, not the
    machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def cap_loader_workers(requested: int) -> tuple[int, str | None]:
    """(data loader worker processes to start, a note when `requested` was capped at `usable_cpus()`).

    More workers than CPUs only take turns on them (PyTorch warns about it at every loader it builds);
    a config written for a bigger machine runs here with what there is."""
    cpus = usable_cpus()
    if requested <= cpus:
        return requested, None
    return cpus, (
        f"note: data.num_workers={requested} capped at {cpus}, the CPUs this process may use (more "
        "loader processes would only take turns on them)"
    )


def is_terminal(stream: Any = None) -> bool:
    """Whether `stream` (default stdout) is a terminal; a file or a pipe gets plain lines, no escape codes."""
    stream = sys.stdout if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced by an object without isatty
        return False
