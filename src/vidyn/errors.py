"""User-facing errors.

`VidynError` marks a problem with what the user asked for (a missing file, an unknown model, a bad
config key, a tensor of the wrong shape). Its message says what is wrong and how to fix it; the CLI
prints it on one line, without a traceback, and exits non-zero. Programming errors stay ordinary
exceptions so they keep their tracebacks.
"""

from __future__ import annotations


class VidynError(ValueError):
    """Bad user input. The message must say what was wrong and how to fix it, in one line."""


class VideoReadError(VidynError):
    """A file could not be decoded as video (missing, truncated, corrupt or not a video)."""
