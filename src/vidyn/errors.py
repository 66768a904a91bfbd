"""User-facing errors.

`VidynError` marks a problem with what the user asked for (a missing file, an unknown model, a bad
config key, a tensor of the wrong shape). Its message says what is wrong and how to fix it; the CLI
prints it on one line, without a traceback, and exits non-zero. Programming errors stay ordinary
exceptions so they keep their tracebacks.
"""

from __future__ import annotations

import pickle
import re


class VidynError(ValueError):
    """Bad user input. The message must say what was wrong and how to fix it, in one line."""


class VidynWarning(UserWarning):
    """Something the user should know that does not stop the command (a fallback taken, a biased metric).

    A real warning, so `-W ignore::UserWarning` or `warnings.filterwarnings(..., category=VidynWarning)`
    silences it; the CLI prints it as one line `vidyn: warning: ...` (`vidyn.console`)."""


class VideoReadError(VidynError):
    """A file could not be decoded as video (missing, truncated, corrupt or not a video)."""


def unpickling_refusal(exc: BaseException) -> str | None:
    """torch.load(weights_only=True)'s refusal in a few words (its own message goes on to suggest
    weights_only=False, the one thing not to do with a stranger's file); None for other errors."""
    if not isinstance(exc, pickle.UnpicklingError):
        return None
    found = re.search(r"unsupported (?:global: )?GLOBAL (\S+)|unsupported operand \d+", str(exc), re.I)
    what = f" ({found.group(1) or found.group(0)})" if found else ""
    return f"it pickles Python objects{what}, which vidyn never unpickles"
