"""Every model family trains under `trainer.precision=bf16-mixed` (the GPU recommendation) and exports
finite weights. Run here through CPU autocast, which catches the dtype plumbing that breaks such runs
(solver times in bf16, custom autograd Functions, compiled kernels, losses that must stay fp32)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch
from tiny_configs import tiny_prediction_config

from vidyn import api
from vidyn.errors import VidynWarning
from vidyn.nn import compiled, upsample
from vidyn.tasks import engine

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tasks"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_api_recognition import tiny_recognition_config  # noqa: E402
from test_generation import generation_config  # noqa: E402


def _vid_ode() -> dict:
    cfg = tiny_prediction_config("vid_ode_tiny")
    cfg["data"]["args"]["irregular"] = True
    cfg["task"] = {
        "name": "prediction",
        "args": {"num_context": 3, "num_future": 3, "mode": "irregular", "loss": "model"},
    }
    return cfg


CONFIGS = {
    "convlstm": lambda: tiny_prediction_config("convlstm_tiny"),
    "predrnn_v2": lambda: tiny_prediction_config("predrnn_v2_tiny"),
    "transformer": lambda: tiny_prediction_config("transformer_tiny"),
    "vid_ode": _vid_ode,
    "cnn_rnn": tiny_recognition_config,
    "ode_gan": lambda: generation_config(
        "ode_gan_tiny",
        "gan",
        {"num_frames": 4, "frame_intervals": [1, 2], "d_base_channels": 8},
        num_classes=7,
    ),
    "sde_video": lambda: generation_config(
        "sde_video_tiny", "latent_sde", {"num_context": 2, "kl_anneal_steps": 5}, frames=6, num_classes=7
    ),
}


@pytest.mark.parametrize("family", list(CONFIGS))
def test_trains_in_bf16_mixed_and_exports_finite_weights(
    family: str, tmp_path: Path, monkeypatch, recwarn
) -> None:
    monkeypatch.setattr(engine, "native_cpu_bf16", lambda: True)  # bf16 even on a CPU that emulates it
    if family in ("vid_ode", "ode_gan"):  # their decoders' compiled upsampling, at these tiny sizes too
        monkeypatch.setattr(upsample, "COMPILE_MIN_ELEMENTS", 0)
        monkeypatch.setitem(compiled._state, "enabled", True)
    cfg = CONFIGS[family]()
    cfg["trainer"].update({"precision": "bf16-mixed", "max_steps": 2, "val_check_interval": 2})
    cfg["trainer"].pop("monitor", None)
    result = api.train(cfg, run_dir=tmp_path / "run", evaluate_after=False)
    assert result.steps == 2
    weights = safetensors.torch.load_file(tmp_path / "run" / "model.safetensors")
    floats = [w for w in weights.values() if w.is_floating_point()]
    assert floats and all(w.dtype == torch.float32 for w in floats)  # fp32 master weights
    assert all(bool(torch.isfinite(w).all()) for w in floats)
    losses = [v for k, v in result.metrics.items() if "loss" in k and isinstance(v, float)]
    assert all(math.isfinite(v) for v in losses)
    assert not [w for w in recwarn if "torch.compile failed" in str(w.message)]  # it compiled in bf16


def test_bf16_on_a_cpu_without_native_bf16_falls_back_to_fp32_with_one_line(monkeypatch) -> None:
    """Emulated bf16 is slower than fp32 (15-18x for convolutions on AVX2 only): such CPUs train in fp32."""
    monkeypatch.setattr(engine.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(engine, "native_cpu_bf16", lambda: False)
    with pytest.warns(VidynWarning) as caught:
        assert engine.precision_for_device("bf16-mixed", "auto") == "32-true"
    (message,) = [str(w.message) for w in caught]
    assert message == (
        "trainer.precision=bf16-mixed: this CPU has no native bf16 (AVX512-BF16 or AMX); "
        "training in 32-true on this machine"
    )
    monkeypatch.setattr(engine, "native_cpu_bf16", lambda: True)
    assert engine.precision_for_device("bf16-mixed", "cpu") == "bf16-mixed"
    assert engine.precision_for_device("32-true", "cpu") == "32-true"
