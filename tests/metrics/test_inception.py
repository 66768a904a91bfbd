"""vidyn's eager InceptionV3 against the TorchScript file's own output (tools/make_inception_fixture.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vidyn.metrics.inception import InceptionFeatures

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).parent / "fixtures" / "inception_reference.npz"


def _make_inputs(seed: int) -> np.ndarray:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from make_inception_fixture import make_inputs
    finally:
        sys.path.pop(0)
    return make_inputs(seed)


def test_inception_features_match_torchscript_reference(inception_net):
    """Tolerance: max |ours - TorchScript| <= 1e-4 (absolute; features are in [0, ~6])."""
    ref = np.load(FIXTURE)
    images = torch.from_numpy(_make_inputs(int(ref["seed"]))).permute(0, 3, 1, 2)  # (4, 3, 299, 299) uint8
    features = InceptionFeatures(inception_net)
    got = features(images).numpy()
    assert got.shape == (4, 2048)
    err = np.abs(got - ref["features"]).max()
    assert err <= 1e-4, f"max abs error {err:.3g}"  # measured 8e-6
    # floats in [0, 1] give the same features as the uint8 images they came from
    as_float = features(images[:2].float() / 255).numpy()
    assert np.abs(as_float - got[:2]).max() <= 1e-4


def test_grayscale_and_resize(inception_net):
    features = InceptionFeatures(inception_net)
    gray = torch.rand(2, 1, 40, 40, generator=torch.Generator().manual_seed(0))
    out = features(gray)
    assert out.shape == (2, 2048) and torch.isfinite(out).all()
    assert torch.allclose(out, features(gray.expand(-1, 3, -1, -1)))
