"""A full disk or a folder that may not be written (issue #17): every write through `atomic_path` fails
with a one-line VidynError naming the file, the cause and the fix, the file that was there keeps its
bytes, and no temporary file is left.

Tests run as root, which ignores permission bits, so a read-only folder is simulated by making the
temporary file's creation or the rename fail with EROFS/EACCES, and a full disk by a write that fails
with ENOSPC part-way; the CLI tests in a subprocess meet a real OS error: a file size limit
(`ulimit -f`), under which the kernel refuses writes past the limit (EFBIG) as it does on a full disk.
"""

from __future__ import annotations

import errno
import hashlib
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors
import safetensors.torch
import torch

from vidyn import fileio
from vidyn.cli import main
from vidyn.data import store
from vidyn.data.video_io import write_video
from vidyn.errors import VidynError
from vidyn.export import build_model, export_model
from vidyn.fileio import TEMP_GLOB, atomic_path, atomic_write_text
from vidyn.tasks import faults


def digests(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden temporaries included) -> its sha256."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*")
            if p.is_file()}  # fmt: skip


def assert_one_line(err: VidynError | str, path: Path, cause: str) -> None:
    text = str(err)
    assert "\n" not in text.strip() and str(path) in text and cause in text, text


@pytest.mark.parametrize(
    ("code", "cause"),
    [
        (errno.ENOSPC, "no space is left"),
        (errno.EDQUOT, "quota"),
        (errno.EROFS, "read-only"),
        (errno.EACCES, "permission denied"),
    ],
)
def test_a_write_that_fails_keeps_the_previous_file(tmp_path: Path, code: int, cause: str) -> None:
    path = tmp_path / "metrics.json"
    path.write_text("previous\n")
    with pytest.raises(VidynError) as err, atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(b"half of the new fi")
        f.flush()
        raise OSError(code, "simulated")
    assert_one_line(err.value, path, cause)
    assert path.read_text() == "previous\n" and list(tmp_path.glob(TEMP_GLOB)) == []


@pytest.mark.parametrize(("where", "code"), [("mkstemp", errno.EROFS), ("rename", errno.EACCES)])
def test_a_read_only_folder_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str, code: int
) -> None:
    def refuse(*args, **kwargs):
        raise OSError(code, "simulated", str(tmp_path))

    if where == "mkstemp":  # creating any file in the folder fails: read-only file system
        monkeypatch.setattr(fileio.tempfile, "mkstemp", refuse)
    else:  # the new file was written, but may not replace the old one
        monkeypatch.setattr(fileio, "_rename", refuse)
    path = tmp_path / "config.yaml"
    path.write_text("previous\n")
    with pytest.raises(VidynError) as err:
        atomic_write_text(path, "new\n")
    assert_one_line(err.value, path, "read-only" if code == errno.EROFS else "permission denied")
    assert path.read_text() == "previous\n" and list(tmp_path.glob(TEMP_GLOB)) == []


def test_other_errors_pass_through_unchanged(tmp_path: Path) -> None:
    for exc in (ValueError("a bug"), OSError(errno.EIO, "input/output error"), OSError("unrelated")):
        with pytest.raises(type(exc)) as err, atomic_path(tmp_path / "x.txt"):
            raise exc
        assert err.value is exc
    assert list(tmp_path.iterdir()) == []


def test_an_export_on_a_full_disk_keeps_the_previous_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """safetensors reports the OS error inside its own exception's text."""
    out = export_model(build_model("convlstm_tiny", in_channels=1, image_size=16), tmp_path / "model")
    before = digests(out)

    def full_disk(model, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 100)
        raise safetensors.SafetensorError(
            "Error while serializing: I/O error: No space left on device (os error 28)"
        )

    monkeypatch.setattr(safetensors.torch, "save_model", full_disk)
    with pytest.raises(VidynError) as err:
        export_model(build_model("convlstm_tiny", in_channels=1, image_size=16, hidden_channels=4), out)
    assert_one_line(err.value, out / "model.safetensors", "no space is left")
    assert digests(out) == before


@pytest.mark.parametrize(("free", "cause"), [(0, "no space is left"), (10**12, "stopped short")])
def test_a_store_shard_cut_short_keeps_the_previous_shard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, free: int, cause: str
) -> None:
    """numpy's np.save into a file says only 'N requested and M written': the free space names the cause."""
    shard = tmp_path / "shard_00000.npy"
    store._atomic_write(shard, np.zeros((2, 4, 8, 8, 1), dtype=np.uint8))
    before = digests(tmp_path)

    def short_write(f, array, allow_pickle=False):
        f.write(b"\x93NUMPY")
        raise OSError(f"{array.nbytes} requested and 6 written")

    monkeypatch.setattr(np, "save", short_write)
    monkeypatch.setattr(fileio, "_free_bytes", lambda folder: free)
    with pytest.raises(VidynError) as err:
        store._atomic_write(shard, np.ones((2, 4, 8, 8, 1), dtype=np.uint8))
    assert_one_line(err.value, shard, cause)
    assert digests(tmp_path) == before


def test_train_keeps_the_last_checkpoint_when_the_disk_fills(
    tmp_path: Path, tiny_config_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """The disk fills half-way through a checkpoint at step 4: exit 2, one line, step 2's checkpoints kept."""
    seen: dict[str, dict[str, str]] = {}

    def disk_fills(where: str, step: int) -> None:
        if where == "checkpoint" and step >= 4:
            files = digests(tmp_path / "run" / "checkpoints")  # and the temporary file half written
            seen["before"] = {name: digest for name, digest in files.items() if not name.startswith(".")}
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(faults, "point", disk_fills)
    assert main(["train", "-c", str(tiny_config_file), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert_one_line(err.strip().splitlines()[-1], tmp_path / "run" / "checkpoints", "no space is left")
    kept = digests(tmp_path / "run" / "checkpoints")
    assert kept == seen["before"] and "last.ckpt" in kept  # no temporary file among them either
    assert torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=False)["global_step"] == 2


def _file_size_limit(limit: int) -> None:  # runs in the child before exec
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the writer instead of failing
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.parametrize("ext", [".mp4", ".npy"])
def test_cli_meets_a_real_refused_write(tmp_path: Path, ext: str) -> None:
    """`ulimit -f 4 KB`: the kernel refuses the write part-way (PyAV, numpy); exit 2, one line, old file
    kept."""
    out = tmp_path / f"clip{ext}"
    write_video(out, np.zeros((4, 16, 16, 3), dtype=np.uint8))  # the earlier file, 1-2 KB
    before = digests(tmp_path)
    render = ["render", "shapes", "--out", str(out), "--frames", "60", "--size", "64"]
    proc = subprocess.run(
        [sys.executable, "-m", "vidyn", *render], capture_output=True, text=True,
        preexec_fn=lambda: _file_size_limit(4096),
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert_one_line(proc.stderr.strip().splitlines()[-1], out, "cannot write")
    assert digests(tmp_path) == before


def test_cli_folder_that_cannot_be_created_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    assert main(["render", "shapes", "--out", str(tmp_path / "new" / "clip.gif")]) == 2
    assert_one_line(capsys.readouterr().err, tmp_path / "new", "read-only")
