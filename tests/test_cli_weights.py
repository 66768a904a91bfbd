"""`vidyn weights list|install` from the command line (the verification itself: tests/metrics)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _vidyn(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "VIDYN_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "vidyn", *args], capture_output=True, text=True, env=env)


def test_list_shows_each_file_missing_in_an_empty_cache(tmp_path: Path) -> None:
    proc = _vidyn("weights", "list", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = proc.stdout.splitlines()
    assert [r.split()[:2] for r in rows] == [["missing", "fid"], ["missing", "fvd"], ["missing", "lpips"]]
    assert all(str(tmp_path) in r for r in rows)


def test_install_refuses_an_unknown_group_without_touching_the_cache(tmp_path: Path) -> None:
    proc = _vidyn("weights", "install", "fdi", home=tmp_path / "cache")
    assert proc.returncode == 2 and "invalid choice: 'fdi'" in proc.stderr
    assert not (tmp_path / "cache").exists()
