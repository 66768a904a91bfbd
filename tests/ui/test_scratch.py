"""The web UI's request folders: bounded while it runs, gone when it stops (no /tmp/vidyn-ui-* left)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vidyn.ui.scratch import RequestFolders


def test_only_the_newest_request_folders_are_kept_and_close_removes_all(tmp_path: Path) -> None:
    folders = RequestFolders(keep=2, parent=tmp_path)
    made = []
    for _ in range(4):
        made.append(folders.new())
        (made[-1] / "out.gif").write_bytes(b"GIF89a")  # a request's output
    root = folders.root
    assert root is not None and root.parent == tmp_path and root.name.startswith("vidyn-ui-")
    assert [f.is_dir() for f in made] == [False, False, True, True]
    assert sorted(root.iterdir()) == sorted(made[2:])
    folders.close()
    assert list(tmp_path.iterdir()) == []
    again = folders.new()  # a new request after close gets a fresh root
    assert again.is_dir() and again.parent != root
    folders.close()
    with pytest.raises(ValueError):
        RequestFolders(keep=0)


LEAVE_A_REQUEST = """
import tempfile
from vidyn.ui import handlers
tempfile.tempdir = {tmp!r}
folder = handlers._workdir()
(folder / "grid.gif").write_bytes(b"GIF89a")
print(handlers.WORK.root)
"""


def test_a_process_that_ran_handlers_leaves_no_folder_behind(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", LEAVE_A_REQUEST.format(tmp=str(tmp_path))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    root = Path(proc.stdout.strip())
    assert root.parent == tmp_path and root.name.startswith("vidyn-ui-")
    assert not root.exists() and list(tmp_path.iterdir()) == []
