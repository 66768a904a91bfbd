"""LPIPS v0.1 (AlexNet): verified heads, a torchvision-format backbone file, null with a reason without it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from vidyn.metrics.lpips import ALEX_CONVS, SCALE, SHIFT, load_lpips, try_load_lpips
from vidyn.metrics.weights import LPIPS_ALEX, weight_path

pytestmark = pytest.mark.usefixtures("one_thread")


def _fake_alexnet(path, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict in torchvision's alexnet names (the real one cannot be downloaded here)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for i, cin, cout, k, *_ in ALEX_CONVS:
        state[f"features.{i}.weight"] = torch.randn(cout, cin, k, k, generator=g) / (cin * k * k) ** 0.5
        state[f"features.{i}.bias"] = torch.randn(cout, generator=g) * 0.1
    state["classifier.1.weight"] = torch.zeros(4, 4)  # ignored, as in a real torchvision file
    torch.save(state, path)
    return state


def _reference(state, heads, x0, x1) -> torch.Tensor:
    """The LPIPS formula written out plainly (torchvision layer order, lpips.LPIPS(net='alex') v0.1)."""

    def feats(x):
        x = (x.expand(-1, 3, -1, -1) * 2 - 1 - torch.tensor(SHIFT).view(1, 3, 1, 1)) / torch.tensor(
            SCALE
        ).view(1, 3, 1, 1)
        out = []
        for n, (i, _, _, _, s, p) in enumerate(ALEX_CONVS):
            x = F.max_pool2d(x, 3, 2) if n in (1, 2) else x
            x = F.relu(F.conv2d(x, state[f"features.{i}.weight"], state[f"features.{i}.bias"], s, p))
            out.append(x / (x.norm(dim=1, keepdim=True) + 1e-10))
        return out

    return sum(
        (heads[f"lin{k}.weight"] * (a - b) ** 2).sum(1).mean((1, 2))
        for k, (a, b) in enumerate(zip(feats(x0), feats(x1), strict=True))
    )


def test_heads_are_verified_and_nonnegative():
    heads = load_file(str(weight_path(LPIPS_ALEX.name)))
    assert [tuple(heads[f"lin{k}.weight"].shape) for k in range(5)] == [
        (1, 64, 1, 1), (1, 192, 1, 1), (1, 384, 1, 1), (1, 256, 1, 1), (1, 256, 1, 1)
    ]  # fmt: skip
    assert all((h >= 0).all() for h in heads.values())


def test_lpips_matches_plain_formula(tmp_path):
    state = _fake_alexnet(tmp_path / "alexnet.pth")
    model = load_lpips(tmp_path / "alexnet.pth")
    heads = load_file(str(weight_path(LPIPS_ALEX.name)))
    g = torch.Generator().manual_seed(1)
    x0, x1 = torch.rand(3, 3, 64, 64, generator=g), torch.rand(3, 3, 64, 64, generator=g)
    got = model(x0, x1)
    assert torch.allclose(got, _reference(state, heads, x0, x1), rtol=1e-4, atol=1e-6)
    assert (model(x0, x0) == 0).all() and (got > 0).all()
    clips = model.clips(torch.stack([x0, x1], 1), torch.stack([x1, x1], 1))  # (3, 2, 3, 64, 64) -> (3, 2)
    assert clips.shape == (3, 2) and torch.allclose(clips[:, 0], got) and (clips[:, 1] == 0).all()
    gray = x0[:, :1]
    assert torch.allclose(
        model(gray, x1[:, :1]), model(gray.expand(-1, 3, -1, -1), x1[:, :1].expand(-1, 3, -1, -1))
    )


def test_missing_backbone_gives_none_and_reason(tmp_path, monkeypatch):
    monkeypatch.delenv("VIDYN_ALEXNET", raising=False)
    model, reason = try_load_lpips()
    assert model is None and "VIDYN_ALEXNET" in reason and "\n" not in reason
    model, reason = try_load_lpips(tmp_path / "nope.pth")
    assert model is None and "not found" in reason
    monkeypatch.setenv("VIDYN_ALEXNET", str(tmp_path / "a.pth"))
    _fake_alexnet(tmp_path / "a.pth")
    model, reason = try_load_lpips()
    assert model is not None and reason is None
