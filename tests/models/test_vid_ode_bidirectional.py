"""Vid-ODE's `interpolation="bidirectional"` option: in-between frames fuse both neighbouring observations."""

from __future__ import annotations

import pytest
import torch

import vidyn.models.vid_ode as vo
import vidyn.models.vid_ode_loss as vl
from vidyn.errors import VidynError
from vidyn.nn.warp import warp
from vidyn.registry import MODELS


def vid_ode_tiny(**kwargs):
    return MODELS.build("vid_ode_tiny", **kwargs)


CTX_T = torch.tensor([0.0, 0.2, 0.5])
TGT_T = torch.tensor([0.05, 0.2, 0.3, 0.45, 0.6])  # between, on an observation, between, between, beyond


def _model(
    mask_logit: float = 30.0, visible_logit: float = 0.0, flow: float = 0.0, blend_time: float = 0.0
) -> vo.VidODE:
    """Tiny bidirectional model whose head outputs constants: D = 0 and the given flows, mask, visibility."""
    torch.manual_seed(0)
    model = vid_ode_tiny(in_channels=1, interpolation="bidirectional", blend_time=blend_time).eval()
    head = model.decoder[-1]
    assert head.out_channels == 2 + 1 + 1 + 3  # flow, D, mask; flow to the next observation, visibility
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    head.bias.data[3] = mask_logit
    head.bias.data[6] = visible_logit
    head.bias.data[[0, 1, 4, 5]] = flow
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


def test_learned_terms_fade_into_the_blend_near_observations() -> None:
    """The gate g = 1 - exp(-min(t - t_a, t_b - t) / blend_time) scales flows, V - 1/2 and 1 - M."""
    ctx = torch.rand(1, 2, 1, 16, 16)
    wild = {"mask_logit": -30.0, "visible_logit": 30.0, "flow": 2.0}  # image D = 0 is far from the blend
    ctx_t, near = torch.tensor([0.0, 1e-4]), torch.tensor([2.5e-5, 5e-5])  # a gap of 0.1 ms
    linear = MODELS.build("linear")(ctx, ctx_t, near)
    with torch.no_grad():
        gated = _model(**wild, blend_time=0.05)(ctx, ctx_t, near)
        ungated = _model(**wild, blend_time=0.0)(ctx, ctx_t, near)
        at_obs = _model(**wild, blend_time=0.05)(ctx, torch.tensor([0.0, 0.4]), torch.tensor([0.0]))
    torch.testing.assert_close(gated, linear, atol=2e-3, rtol=0)
    assert float((ungated - linear).abs().mean()) > 0.1  # without the gate the same head is far off
    torch.testing.assert_close(at_obs[:, 0], ctx[:, 0], atol=1e-5, rtol=0)  # on an observation: that frame


def test_flows_are_velocities_times_the_time_to_each_neighbour() -> None:
    model = _model(flow=1.0, blend_time=0.0)  # raw outputs U = 1 px per velocity_unit (0.1 s)
    ctx = torch.rand(1, 2, 1, 16, 16)
    with torch.no_grad():
        out = model.forward_components(ctx, torch.tensor([0.0, 0.4]), torch.tensor([0.1, 0.3]))
    torch.testing.assert_close(out["flow"][0, :, 0, 0, 0], torch.tensor([1.0, 3.0]))  # t - t_a = 0.1, 0.3 s
    torch.testing.assert_close(out["flow_back"][0, :, 0, 0, 0], torch.tensor([3.0, 1.0]))  # t_b - t
    with pytest.raises(VidynError, match="velocity_unit must be > 0"):
        vid_ode_tiny(interpolation="bidirectional", velocity_unit=0.0)


def test_warping_loss_scores_each_warped_neighbour_on_two_sided_targets() -> None:
    model = _model(blend_time=0.0)  # zero flows: each side is its neighbour itself
    ctx, target = torch.rand(1, 3, 1, 16, 16), torch.rand(1, 2, 1, 16, 16)
    tgt_t = torch.tensor([0.1, 0.7])  # between observations 0 and 1; beyond the last (no next observation)
    parts = model.forward_components(ctx, CTX_T, tgt_t)
    assert parts["two_sided"].tolist() == [[True, False]]
    expected = ((target[:, 0] - ctx[:, 0]).abs().mean() + (target[:, 0] - ctx[:, 1]).abs().mean()) / 2
    torch.testing.assert_close(vl.bidirectional_warp_loss(parts, target), expected)
    pooled = vl.bidirectional_warp_loss(parts, target, scales=[16]) - expected  # 16x16 pool: frame means
    means = [float((target[:, 0].mean() - ctx[:, i].mean()).abs()) / 2 for i in (0, 1)]
    torch.testing.assert_close(pooled, torch.tensor(sum(means)))
    chain = vid_ode_tiny(in_channels=1).eval()
    with pytest.raises(VidynError, match="interpolation=bidirectional"):
        vl.bidirectional_warp_loss(chain.forward_components(ctx, CTX_T, tgt_t), target)


def test_pyramid_l1_compares_pooled_frames() -> None:
    pred, target = torch.zeros(2, 3, 1, 8, 8), torch.zeros(2, 3, 1, 8, 8)
    target[..., 0, 0] = 1.0  # one bright pixel: full-res L1 1/64, 2x2-pooled 1/4 over 16 cells
    assert float(vl.pyramid_l1(pred, target, [])) == 0.0
    torch.testing.assert_close(vl.pyramid_l1(pred, target, [2]), torch.tensor(0.25 / 16))
    torch.testing.assert_close(vl.pyramid_l1(pred, target, [2, 8]), torch.tensor(0.25 / 16 + 1 / 64))


def test_every_observation_starts_a_chain_and_components_compose() -> None:
    torch.manual_seed(1)
    model = vid_ode_tiny(in_channels=1, interpolation="bidirectional").eval()
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
    model = vid_ode_tiny(in_channels=1, interpolation="bidirectional").train()
    ctx, target = torch.rand(2, 3, 1, 16, 16), torch.rand(2, 2, 1, 16, 16)
    parts = model.forward_components(ctx, CTX_T, torch.tensor([0.1, 0.3]))
    vl.vid_ode_reconstruction_loss(
        parts["frames"], target, parts["start_frame"], parts["difference"], parts["chain_start"]
    ).backward()
    grad = model.decoder[-1].weight.grad.flatten(1).abs().sum(dim=1)  # per output channel
    assert bool((grad > 0).all()), grad  # flow, D, mask, flow to the next observation, visibility


def test_chain_mode_is_the_default_and_bad_names_are_refused() -> None:
    assert vid_ode_tiny().interpolation == "chain"
    chain = vid_ode_tiny(in_channels=1).eval()
    assert chain.decoder[-1].out_channels == 2 + 1 + 1
    with torch.no_grad():
        assert "flow_back" not in chain.forward_components(torch.rand(1, 3, 1, 16, 16), CTX_T, TGT_T)
    with pytest.raises(VidynError, match="interpolation must be one of chain, bidirectional"):
        vid_ode_tiny(interpolation="both")
