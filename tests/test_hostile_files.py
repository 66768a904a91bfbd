"""Nothing a user loads runs code, and a hostile or broken file is a one-line error (issue #17).

Each test plants a payload that would create a marker file if it ever ran (a pickle whose `__reduce__`
calls `os.system("touch MARKER")`, a YAML `!!python/object/apply:os.system` tag), goes through the command
line as a user would, and checks that the marker does not exist and that the command either succeeds
without the payload or fails with exit status 2 and one line on stderr. Resume checkpoints (`--resume`)
are covered with the training engine's tests.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import vidyn
from vidyn.cli import main
from vidyn.data.video_io import write_video
from vidyn.export import export_model


class Payload:
    """Unpickling this runs `touch MARKER`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _one_line_error(capsys: pytest.CaptureFixture, argv: list[str], match: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("vidyn: error: ") and err.count("\n") == 1, err
    assert match in err, err
    return err


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exported convlstm_tiny and a 16x16 clip for it."""
    base = tmp_path_factory.mktemp("hostile")
    export_model(vidyn.build_model("convlstm_tiny", in_channels=1), base / "model")
    frames = (np.random.default_rng(0).random((12, 16, 16, 1)) * 255).astype(np.uint8)
    write_video(base / "clip.mp4", frames, fps=10.0)
    return base


def _copy_model(exported: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(exported / "model", tmp_path / "model"))


def _predict(exported: Path, model: Path, tmp_path: Path, clip: Path | None = None) -> list[str]:
    clip = clip or exported / "clip.mp4"
    return ["predict", str(model), "--input", str(clip), "--steps", "2", "--out", str(tmp_path / "out.mp4")]


# ------------------------------------------------------------------------------------- pickled inputs


def test_pt_clip_with_a_payload_is_skipped_by_prepare(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    marker, clips = tmp_path / "ran", tmp_path / "clips"
    clips.mkdir()
    torch.save(torch.rand(6, 1, 8, 8), clips / "good.pt")
    torch.save({"frames": torch.rand(6, 1, 8, 8), "x": Payload(marker)}, clips / "evil.pt")
    argv = ["prepare", "--dataset", "folder", "--root", str(clips), "--out", str(tmp_path / "store")]
    assert main([*argv, "--size", "8", "--frames", "4", "--stride", "1", "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "2 videos, 1 clips, 1 skipped" in out
    assert "skipped evil.pt:" in out and "it pickles Python objects (posix.system)" in out
    assert not marker.exists()


def test_npy_and_pt_inputs_with_a_payload(
    exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    marker = tmp_path / "ran"
    evil_npy = tmp_path / "evil.npy"
    np.save(evil_npy, np.array([Payload(marker)], dtype=object), allow_pickle=True)
    _one_line_error(capsys, _predict(exported, exported / "model", tmp_path, evil_npy), "not a readable .npy")
    evil_pt = tmp_path / "evil.pt"
    torch.save(Payload(marker), evil_pt)
    _one_line_error(capsys, _predict(exported, exported / "model", tmp_path, evil_pt), "cannot read video")
    assert not marker.exists()


def test_pretrained_backbone_with_a_payload(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    marker, evil = tmp_path / "ran", tmp_path / "resnet18.pth"
    torch.save({"conv1.weight": Payload(marker)}, evil)
    argv = ["train", "-c", "recognize/cnn_rnn_shapes_quick", "--set", f"model.args.pretrained={evil}"]
    argv += ["--set", f"out_dir={tmp_path / 'runs'}", "--set", "trainer.max_steps=1"]
    _one_line_error(capsys, argv, "it pickles Python objects (posix.system), which vidyn never unpickles")
    assert not marker.exists() and not (tmp_path / "runs").exists()


def test_lpips_backbone_with_a_payload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vidyn.metrics.lpips import try_load_lpips

    marker, evil = tmp_path / "ran", tmp_path / "alexnet.pth"
    torch.save({"features.0.weight": Payload(marker)}, evil)
    monkeypatch.setenv("VIDYN_ALEXNET", str(evil))
    model, reason = try_load_lpips()  # what evaluate and compare call; a null LPIPS column with the reason
    assert model is None and "never unpickles" in reason and "\n" not in reason
    assert not marker.exists()


# ------------------------------------------------------------------------------------------ model.json


def _edit_meta(model: Path, edit) -> None:
    meta = json.loads((model / "model.json").read_text())
    (model / "model.json").write_text(json.dumps(edit(meta)))


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m: [m], "holds a JSON list, not an object"),
        (lambda m: {**m, "name": 42}, "names no model"),
        (lambda m: {**m, "name": "../../../usr/lib/python3/os"}, "unknown model"),
        (lambda m: {**m, "args": "__import__('os').system('touch ran')"}, "'args' must be a JSON object"),
        (lambda m: {**m, "args": {"in_channels": "1"}}, "in_channels must be a positive integer"),
        (lambda m: {**m, "args": {"in_channels": 1, "hidden_channels": 20000}}, "do not belong together"),
        (lambda m: {**m, "args": {"in_channels": 1, "hidden_channels": 10**12}}, "do not build model"),
        (lambda m: {**m, "class_names": 7}, "'class_names' must be a JSON array"),
        (lambda m: {**m, "config": "data: !!python/object/apply:os.system [touch ran]"}, "'config' must be"),
    ],
)
def test_model_json_with_wrong_types(exported, tmp_path, capsys, edit, match) -> None:
    model = _copy_model(exported, tmp_path)
    _edit_meta(model, edit)
    _one_line_error(capsys, _predict(exported, model, tmp_path), match)
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"[" * 200_000 + b"]" * 200_000, "maximum recursion depth"),
        (b"\xff\xfe{\x00}\x00", "can't decode byte 0xff"),
        (
            b'{"name": "convlstm_tiny", "args": {"in_channels": NaN}}',
            "in_channels must be a positive integer",
        ),
    ],
)
def test_model_json_that_is_not_json(exported, tmp_path, capsys, raw: bytes, match: str) -> None:
    model = _copy_model(exported, tmp_path)
    (model / "model.json").write_bytes(raw)
    _one_line_error(capsys, _predict(exported, model, tmp_path), match)


def test_paths_in_model_json_are_never_followed(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`args.pretrained` climbing out of the folder to a pickle payload: the exported weights hold the
    backbone, so loading never opens that file (and torch.load(weights_only=True) would refuse it)."""
    marker = tmp_path / "ran"
    torch.save({"conv1.weight": Payload(marker)}, tmp_path / "evil.pth")
    model = export_model(vidyn.build_model("cnn_rnn_tiny"), tmp_path / "deep" / "model")
    _edit_meta(model, lambda m: {**m, "args": {**m["args"], "pretrained": "../../evil.pth"}})
    write_video(tmp_path / "clip.mp4", np.zeros((8, 16, 16, 3), np.uint8), fps=10.0)
    assert main(["classify", str(model), str(tmp_path / "clip.mp4"), "--top", "1"]) == 0
    assert "probabilities averaged" in capsys.readouterr().out
    assert not marker.exists()


# ----------------------------------------------------------------------------------------- safetensors


def _forge(model: Path, edit_header=None, *, length: int | None = None, body: bytes | None = None) -> None:
    """Rewrite model.safetensors with an edited JSON header, a forged length field or other bytes."""
    blob = (model / "model.safetensors").read_bytes()
    n = struct.unpack("<Q", blob[:8])[0]
    header, data = json.loads(blob[8 : 8 + n]), blob[8 + n :]
    if edit_header is not None:
        edit_header(header, next(k for k in header if k != "__metadata__"))
    raw = json.dumps(header).encode()
    out = struct.pack("<Q", len(raw) if length is None else length) + raw + data
    (model / "model.safetensors").write_bytes(out if body is None else body)


@pytest.mark.parametrize(
    ("forge", "match"),
    [
        (dict(length=2**63), "header too large"),
        (dict(length=10**6), "invalid header length"),
        (dict(edit_header=lambda h, k: h[k].update(data_offsets=[0, 10**9])), "invalid shape, data type"),
        (dict(edit_header=lambda h, k: h[k].update(shape=[2**40, 2**40])), "overflow"),
        (dict(edit_header=lambda h, k: h[k].update(dtype="PICKLE")), "unknown variant"),
        (dict(edit_header=lambda h, k: h.update(__metadata__={"x": ["list"]})), "invalid JSON in header"),
        (dict(edit_header=lambda h, k: h[k].update(shape=h[k]["shape"][::-1])), "size mismatch for"),
        (dict(body=b""), "header too small"),
        ("pickle", "header too large"),
    ],
)
def test_forged_safetensors(exported, tmp_path, capsys, forge, match: str) -> None:
    model, marker = _copy_model(exported, tmp_path), tmp_path / "ran"
    if forge == "pickle":  # a pickle payload under the weights file's name
        (model / "model.safetensors").write_bytes(pickle.dumps({"w": Payload(marker)}))
    else:
        _forge(model, **forge)
    _one_line_error(capsys, _predict(exported, model, tmp_path), match)
    assert not marker.exists() and not (tmp_path / "out.mp4").exists()


# ----------------------------------------------------------------------------------------- YAML configs


def _laughs(levels: int = 9) -> str:
    """'Billion laughs': nine anchors, each a list of nine aliases of the previous one (9**9 strings)."""
    items = ['&l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    items += [f"&l{i} [{','.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "{name: convlstm_tiny, args: {in_channels: 1, hidden_channels: [" + ", ".join(items) + "]}}"


@pytest.mark.parametrize(
    ("model_section", "match"),
    [
        (
            '!!python/object/apply:os.system ["touch {marker}"]',
            "could not determine a constructor for the tag",
        ),
        (
            '{name: convlstm_tiny, args: {in_channels: !!python/object/new:os.system ["touch {marker}"]}}',
            "tag",
        ),
        ("!!python/name:os.system", "could not determine a constructor"),
        (_laughs(), "expands to more than 100000 values"),
        ("&self [*self]", "expands to more than"),
        ("[" * 3000 + "]" * 3000, "nested too deeply"),
    ],
)
def test_yaml_config_with_python_tags_and_bombs(tmp_path, capsys, model_section: str, match: str) -> None:
    marker = tmp_path / "ran"
    config = tmp_path / "evil.yaml"
    config.write_text("# vidyn train -c evil.yaml\nmodel: " + model_section.replace("{marker}", str(marker)))
    _one_line_error(capsys, ["train", "-c", str(config), "--set", f"out_dir={tmp_path / 'runs'}"], match)
    assert not marker.exists() and not (tmp_path / "runs").exists()


def test_yaml_override_with_a_python_tag(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    marker = tmp_path / "ran"
    argv = ["train", "-c", "predict/demo", "--set", f"out_dir={tmp_path / 'runs'}"]
    argv += ["--set", f'model=!!python/object/apply:os.system ["touch {marker}"]']
    _one_line_error(capsys, argv, "the value in override")
    assert not marker.exists() and not (tmp_path / "runs").exists()
