"""Vid-ODE's `interpolation="bidirectional"` option: in-between frames fuse both neighbouring observations."""

from __future__ import annotations

import pytest
import torch

import vidyn.models.vid_ode as vo
from vidyn.errors import VidynError
from vidyn.nn.warp import warp
from vidyn.registry import MODELS

CTX_T = torch.tensor([0.0, 0.2, 0.5])
TGT_T = torch.tensor([0.05, 0.2, 0.3, 0.45, 0.6])  # between, on an observation, between, between, beyond


def _model(mask_logit: float = 30.0, visible_logit: float = 0.0) -> vo.VidODE:
    """Tiny bidirectional model whose head outputs constants: zero flows and D, the given mask/visibility."""
    torch.manual_seed(0)
    model = vo.vid_ode_tiny(in_channels=1, interpolation="bidirectional").eval()
    head = model.decoder[-1]
    assert head.out_channels == 2 + 1 + 1 + 3  # flow, D, mask; flow to the next observation, visibility
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    head.bias.data[3] = mask_logit
    head.bias.data[6] = visible_logit
    return model


def test_zero_flow_and_even_visibility_reproduce_the_linear_blend() -> None:
    ctx = torch.rand(2, 3, 1, 16, 16)
    with torch.no_grad():
        out = _model()(ctx, CTX_T, TGT_T)
    linear = MODELS.build("linear")(ctx, CTX_T, TGT_T)
    # In between and on an observation the fusion weighs the neighbours by time, as the pixel blend does.
    torch.testing.assert_close(out[:, :4], linear[:, :4], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[:, 4], ctx[:, 2])  # beyond: the extrapolation chain of the paper


@pytest.mark.parametrize(("visible_logit", "side"), [(30.0, 0), (-30.0, 1)])
def test_visibility_selects_one_neighbour(visible_logit: float, side: int) -> None:
    ctx = torch.rand(1, 3, 1, 16, 16)
    with torch.no_grad():
        out = _model(visible_logit=visible_logit)(ctx, CTX_T, torch.tensor([0.1, 0.3]))
    # 0.1 lies between observations 0 and 1, 0.3 between 1 and 2.
    torch.testing.assert_close(out[:, 0], ctx[:, side], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[:, 1], ctx[:, 1 + side], atol=1e-5, rtol=0)


def test_every_observation_starts_a_chain_and_components_compose() -> None:
    torch.manual_seed(1)
    model = vo.vid_ode_tiny(in_channels=1, interpolation="bidirectional").eval()
    ctx = torch.rand(2, 3, 1, 16, 16)
    with torch.no_grad():
        out = model.forward_components(ctx, CTX_T, TGT_T)
    assert out["chain_start"].tolist() == [[True, True, False, False, True]] * 2
    assert out["flow_back"].shape == out["flow"].shape == (2, 5, 2, 16, 16)
    for k, index in enumerate([0, 1, 1, 1, 2]):  # each target's start frame: the observation at or before it
        torch.testing.assert_close(out["start_frame"][:, k], ctx[:, index])
    # On an observation the frame warps that observation only; beyond, the chain warps recursively.
    torch.testing.assert_close(out["warped"][:, 1], warp(ctx[:, 1], out["flow"][:, 1]))
    # Composition: from an observation up to the next one, D is a difference from that start frame (its loss
    # target is `target - start frame`), so its image is start + D; beyond, D is composed as the paper does.
    m, d, start = out["mask"], out["difference"], out["start_frame"]
    image = torch.cat([start[:, :4] + d[:, :4], d[:, 4:]], dim=1)
    torch.testing.assert_close(out["frames"], m * out["warped"] + (1 - m) * image)


def test_gradients_reach_both_flows_and_the_visibility() -> None:
    torch.manual_seed(2)
    model = vo.vid_ode_tiny(in_channels=1, interpolation="bidirectional").train()
    ctx, target = torch.rand(2, 3, 1, 16, 16), torch.rand(2, 2, 1, 16, 16)
    parts = model.forward_components(ctx, CTX_T, torch.tensor([0.1, 0.3]))
    vo.vid_ode_reconstruction_loss(
        parts["frames"], target, parts["start_frame"], parts["difference"], parts["chain_start"]
    ).backward()
    grad = model.decoder[-1].weight.grad.flatten(1).abs().sum(dim=1)  # per output channel
    assert bool((grad > 0).all()), grad  # flow, D, mask, flow to the next observation, visibility


def test_chain_mode_is_the_default_and_bad_names_are_refused() -> None:
    assert vo.vid_ode_tiny().interpolation == "chain"
    chain = vo.vid_ode_tiny(in_channels=1).eval()
    assert chain.decoder[-1].out_channels == 2 + 1 + 1
    with torch.no_grad():
        assert "flow_back" not in chain.forward_components(torch.rand(1, 3, 1, 16, 16), CTX_T, TGT_T)
    with pytest.raises(VidynError, match="interpolation must be one of chain, bidirectional"):
        vo.vid_ode_tiny(interpolation="both")
