"""Scratch folders for the web UI's requests, bounded while it runs and removed when it closes.

Each request writes its outputs (a grid GIF, a chart) into a folder of its own. Gradio copies a returned
file into its own cache before the page shows it, so a request's folder is needed only briefly; the newest
`keep` are kept anyway (a slow page, a concurrent request) and older ones deleted. All of them live under
one `vidyn-ui-*` folder in the system temp directory, deleted by `close()`, which the app calls when it
stops, and at interpreter exit as a backstop (tests that call the handlers leave nothing behind).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
from collections import deque
from pathlib import Path


class RequestFolders:
    """A new folder per request under one root (`prefix` + random, in `parent` or the temp directory)."""

    def __init__(self, keep: int = 32, parent: str | Path | None = None, prefix: str = "vidyn-ui-") -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.keep, self.parent, self.prefix = keep, parent, prefix
        self._root: Path | None = None
        self._folders: deque[Path] = deque()
        self._lock = threading.Lock()
        self._registered = False

    @property
    def root(self) -> Path | None:
        """The folder holding this process's request folders; None before the first request."""
        return self._root

    def new(self) -> Path:
        """A fresh empty folder for one request; deletes the oldest beyond `keep`."""
        with self._lock:
            if self._root is None or not self._root.is_dir():
                self._root = Path(tempfile.mkdtemp(prefix=self.prefix, dir=self.parent))
                if not self._registered:
                    atexit.register(self.close)
                    self._registered = True
            folder = Path(tempfile.mkdtemp(prefix="request-", dir=self._root))
            self._folders.append(folder)
            while len(self._folders) > self.keep:
                shutil.rmtree(self._folders.popleft(), ignore_errors=True)
            return folder

    def close(self) -> None:
        """Delete every request folder and the root; a later `new()` starts a fresh root."""
        with self._lock:
            if self._root is not None:
                shutil.rmtree(self._root, ignore_errors=True)
            self._root = None
            self._folders.clear()
