"""Tests for the Vid-ODE predictor, its loss, its decoder block and its discriminators."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import vidyn.models.discriminators as disc
import vidyn.models.vid_ode as vo
import vidyn.models.vid_ode_loss as vl
from vidyn.errors import VidynError
from vidyn.models.discriminators import interpolation_sequences
from vidyn.nn import compiled, upsample
from vidyn.nn.warp import warp
from vidyn.registry import MODELS


def vid_ode_tiny(**kwargs):
    return MODELS.build("vid_ode_tiny", **kwargs)


def _clips(batch: int = 2, frames: int = 6, size: int = 16) -> torch.Tensor:
    """Gaussian blobs moving horizontally, `(B, T, 3, H, W)` in [0, 1]."""
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    clips = []
    for b in range(batch):
        x0, v = (4.0, 1.5) if b % 2 == 0 else (11.0, -1.5)
        blobs = [torch.exp(-((xx - x0 - v * t) ** 2 + (yy - 8) ** 2) / 8) for t in range(frames)]
        clips.append(torch.stack(blobs).unsqueeze(1).expand(-1, 3, -1, -1))
    return torch.stack(clips)


def _tiny(seed: int = 0, **kwargs) -> vo.VidODE:
    torch.manual_seed(seed)
    return vid_ode_tiny(**kwargs)


def test_official_widths() -> None:
    model = vo.vid_ode()
    assert [m.out_channels for m in model.encoder if isinstance(m, torch.nn.Conv2d)] == [32, 64, 128]
    convs = [m for m in model.decoder_func.net if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(128, 64), (64, 64), (64, 64), (64, 128)]
    assert model.encoder_rnn.cell.conv_gates.weight.shape == (256, 256, 3, 3)
    assert model.decoder[-1].out_channels == 2 + 3 + 1  # flow, image difference, mask


def test_forward_shapes_times_and_range() -> None:
    model, clips = _tiny(), _clips()
    ctx = clips[:, :3]
    cases = [
        (torch.tensor([0.0, 0.1, 0.2]), torch.tensor([0.25, 0.3, 0.45, 1.0])),  # extrapolation, fractional
        (torch.tensor([0.0, 0.1, 0.2]), torch.tensor([0.05, 0.15])),  # interpolation inside the span
        (torch.tensor([[0.0, 0.1, 0.2], [1.0, 1.3, 1.4]]), torch.tensor([[0.1, 0.5], [1.2, 2.0]])),  # (B, T)
    ]
    for ctx_t, tgt_t in cases:
        model.train()
        out = model(ctx, ctx_t, tgt_t)
        assert out.shape == (2, tgt_t.shape[-1], 3, 16, 16) and torch.isfinite(out).all()
        model.eval()
        with torch.no_grad():
            out = model(ctx, ctx_t, tgt_t)
        assert out.min() >= 0 and out.max() <= 1
        groups = 1 if ctx_t.dim() == 1 else 2  # elements with different relative times are solved apart
        assert model.last_nfe["encoder"] == 2 * groups and model.last_nfe["decoder"] > 0


def test_decoder_latents_follow_the_ode_from_the_first_context_time() -> None:
    # A constant field dz/dt = c makes z(t) = z0 + c (t - t_first) exactly, for every solver.
    for method in ("rk4", "dopri5", "euler"):
        model = _tiny(decoder_method=method).eval()
        last = model.decoder_func.net[-1]
        torch.nn.init.zeros_(last.weight)
        torch.nn.init.constant_(last.bias, 0.25)
        emb = torch.randn(2, 3, 16, 4, 4)
        ctx_rel = torch.tensor([[0.0, 0.1, 0.3], [0.0, 0.2, 0.3]])
        tgt_rel = torch.tensor([[0.0, 0.35, 1.7], [0.1, 0.3, 0.4]])
        with torch.no_grad():
            z = model._latents(emb, ctx_rel, tgt_rel)
            z0 = torch.stack(
                [model.to_initial_state(model.encoder_rnn(emb[i : i + 1], ctx_rel[i]))[0] for i in range(2)]
            )
        expected = z0.unsqueeze(1) + 0.25 * tgt_rel.view(2, 3, 1, 1, 1)
        torch.testing.assert_close(z, expected, atol=1e-5, rtol=0)


def test_per_element_times_match_running_each_element_alone() -> None:
    clips = _clips()
    ctx_t = torch.tensor([[0.0, 0.1, 0.3], [0.5, 0.55, 0.7]])
    tgt_t = torch.tensor([[0.2, 0.4, 0.6], [0.8, 0.6, 1.1]])  # unsorted, mixed interpolation/extrapolation
    for method in ("rk4", "dopri5"):
        model = _tiny(decoder_method=method).eval()
        with torch.no_grad():
            both = model(clips[:, :3], ctx_t, tgt_t)
            nfe = model.last_nfe["decoder"]
            alone = torch.cat([model(clips[i : i + 1, :3], ctx_t[i], tgt_t[i]) for i in range(2)])
        torch.testing.assert_close(both, alone, atol=1e-5, rtol=0)
        assert nfe > 0


def test_shared_time_shift_and_target_order_do_not_matter() -> None:
    model, clips = _tiny().eval(), _clips()
    ctx_t, tgt_t = torch.tensor([0.0, 0.1, 0.2]), torch.tensor([0.15, 0.3, 0.5])
    with torch.no_grad():
        ref = model(clips[:, :3], ctx_t, tgt_t)
        shifted = model(clips[:, :3], ctx_t + 7.0, tgt_t + 7.0)  # the ODE is autonomous
        perm = torch.tensor([2, 0, 1])
        permuted = model(clips[:, :3], ctx_t, tgt_t[perm])
    torch.testing.assert_close(shifted, ref, atol=1e-4, rtol=0)
    torch.testing.assert_close(permuted, ref[:, perm], atol=1e-6, rtol=0)


def test_chains_start_from_first_and_last_context_frames() -> None:
    model, clips = _tiny().eval(), _clips()
    ctx = clips[:, :3]
    with torch.no_grad():
        out = model.forward_components(
            ctx, torch.tensor([0.0, 0.1, 0.2]), torch.tensor([0.05, 0.15, 0.3, 0.4])
        )
    assert out["chain_start"].tolist() == [[True, False, True, False]] * 2
    torch.testing.assert_close(out["start_frame"][:, 0], ctx[:, 0])
    torch.testing.assert_close(out["start_frame"][:, 2], ctx[:, -1])
    # Composition: the first warped frame of each chain is its start frame warped by the first flow.
    torch.testing.assert_close(out["warped"][:, 2], warp(ctx[:, -1], out["flow"][:, 2]))
    torch.testing.assert_close(out["warped"][:, 3], warp(out["warped"][:, 2], out["flow"][:, 3]))
    m = out["mask"]
    torch.testing.assert_close(out["frames"], m * out["warped"] + (1 - m) * out["difference"])


def test_nfe_per_solver() -> None:
    clips = _clips()
    ctx_t, tgt_t = torch.tensor([0.0, 0.1, 0.2]), torch.tensor([0.3, 0.4, 0.5])
    nfe = {}
    for method in ("rk4", "dopri5"):
        model = _tiny(decoder_method=method, encoder_method="rk4")
        model(clips[:, :3], ctx_t, tgt_t)
        nfe[method] = model.last_nfe
    assert nfe["rk4"] == {"encoder": 2 * 4, "decoder": 3 * 4}  # rk4 steps 0 -> .3 -> .4 -> .5
    assert nfe["dopri5"]["decoder"] >= 8 and nfe["dopri5"]["encoder"] == 8


def test_gradients_reach_every_generator_parameter() -> None:
    model, clips = _tiny(), _clips()
    out = model.forward_components(clips[:, :3], torch.tensor([0.0, 0.1, 0.2]), torch.tensor([0.1, 0.3]))
    loss = vl.vid_ode_reconstruction_loss(out["frames"], clips[:, 3:5], out["start_frame"], out["difference"])
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_compiled_decoder_gives_the_eager_loss_and_gradients(monkeypatch) -> None:
    """The training speed-up (the decoder's upsampling compiled by TorchInductor, `vidyn.nn.compiled`)
    computes the same loss and gradients as the eager model, within float32 tolerance."""
    monkeypatch.setattr(upsample, "COMPILE_MIN_ELEMENTS", 0)  # compile even the tiny model's tensors
    clips, results = _clips(), {}
    for compile_on in (False, True):
        monkeypatch.setitem(compiled._state, "enabled", compile_on)
        model = _tiny()
        out = model.forward_components(clips[:, :3], torch.tensor([0.0, 0.1, 0.2]), torch.tensor([0.3, 0.5]))
        loss = vl.vid_ode_reconstruction_loss(
            out["frames"], clips[:, 3:5], out["start_frame"], out["difference"]
        )
        loss.backward()
        results[compile_on] = (loss.detach(), [p.grad for p in model.parameters()])
    torch.testing.assert_close(results[True][0], results[False][0], rtol=1e-5, atol=1e-7)
    for fast, eager in zip(results[True][1], results[False][1], strict=True):
        torch.testing.assert_close(fast, eager, rtol=1e-4, atol=1e-6)


def test_tiny_model_overfits_two_clips() -> None:
    model, clips = _tiny(), _clips()
    ctx, tgt, times = clips[:, :3], clips[:, 3:], torch.arange(6) / 6
    opt = torch.optim.Adamax(model.parameters(), lr=1e-2)
    l1 = []
    for _ in range(60):
        out = model.forward_components(ctx, times[:3], times[3:])
        loss = vl.vid_ode_reconstruction_loss(out["frames"], tgt, out["start_frame"], out["difference"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        l1.append(F.l1_loss(out["frames"], tgt).item())
    assert l1[-1] < 0.25 * l1[0]


def test_adjoint_decoder_runs_and_matches() -> None:
    clips, grads = _clips(), []
    for adjoint in (False, True):
        torch.manual_seed(0)
        model = vo.vid_ode(
            image_size=16, hidden_channels=16, ode_hidden_channels=8, ode_layers=1, adjoint=adjoint
        )
        model.eval()
        model(clips[:, :3], torch.tensor([0.0, 0.1, 0.2]), torch.tensor([0.3, 0.4])).sum().backward()
        grads.append(model.decoder_func.net[0].weight.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=2e-2, atol=1e-4)


def test_reconstruction_loss_hand_values() -> None:
    def t(*values: float) -> torch.Tensor:
        return torch.tensor(values).view(1, len(values), 1, 1, 1)

    target, pred, diff = t(1.0, 3.0), t(2.0, 3.0), t(1.0, 1.0)
    start = torch.zeros(1, 1, 1, 1)
    # frames |2-1|, |3-3| -> 0.5; true differences (1-0, 3-1) = (1, 2) vs D = (1, 1) -> 0.5
    assert vl.vid_ode_reconstruction_loss(pred, target, start, diff).item() == pytest.approx(1.0)
    # without D the prediction's differences (2, 1) are used -> 0.5 + 1.0
    assert vl.vid_ode_reconstruction_loss(pred, target, start).item() == pytest.approx(1.5)
    # without a start frame only the inner difference counts: |1 - 2| -> 0.5 + 1.0
    assert vl.vid_ode_reconstruction_loss(pred, target).item() == pytest.approx(1.5)
    # a chain restart at k = 1 takes its difference from the start frame: (1, 3) vs D (1, 1) -> 0.5 + 1.0
    chain = torch.tensor([[True, True]])
    starts = torch.zeros(1, 2, 1, 1, 1)
    assert vl.vid_ode_reconstruction_loss(pred, target, starts, diff, chain).item() == pytest.approx(1.5)


def test_discriminator_shapes_and_sequences() -> None:
    d_img = disc.ImageDiscriminator(3, base_channels=8)
    assert d_img(torch.rand(2, 4, 3, 16, 16)).shape == (8, 64, 4, 4)  # 16 -> 8 -> 4 -> 2 -> 3 -> 4
    assert disc.ImageDiscriminator(3, base_channels=4)(torch.rand(1, 3, 64, 64)).shape == (1, 64, 10, 10)
    ctx, fake = torch.rand(2, 3, 3, 16, 16), torch.rand(2, 2, 3, 16, 16)
    seqs = disc.extrapolation_sequences(ctx, fake).view(2, 2, 4, 3, 16, 16)
    for k in range(2):  # window k: context[k:] then fake[:k+1] (the official rearrange_seq)
        torch.testing.assert_close(seqs[:, k], torch.cat([ctx[:, k:], fake[:, : k + 1]], dim=1))
    d_seq = disc.SequenceDiscriminator(3, num_frames=4, base_channels=8)
    assert d_seq(seqs.flatten(0, 1)).shape == (4, 64, 4, 4)
    with pytest.raises(VidynError, match="num_frames"):
        d_seq(torch.rand(1, 3, 3, 16, 16))
    clip, pred = torch.rand(2, 5, 3, 8, 8), torch.rand(2, 2, 3, 8, 8)
    mixed = interpolation_sequences(clip, pred, torch.tensor([1, 3])).view(2, 2, 5, 3, 8, 8)
    torch.testing.assert_close(mixed[:, 0, 1], pred[:, 0])
    torch.testing.assert_close(mixed[:, 1, 3], pred[:, 1])
    torch.testing.assert_close(mixed[:, 0, [0, 2, 3, 4]], clip[:, [0, 2, 3, 4]])


def test_lsgan_losses_hand_values() -> None:
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([0.5, -1.0])
    # 0.5 * (mean(1, .25) + mean(.25, 1)) = 0.625 ; mean((.5 - 1)^2, (-1 - 1)^2) = 2.125
    assert disc.lsgan_d_loss(real, fake).item() == pytest.approx(0.625)
    assert disc.lsgan_g_loss(fake).item() == pytest.approx(2.125)


def test_registry_and_input_errors() -> None:
    model = MODELS.build("vid_ode_tiny", decoder_method="euler")
    assert MODELS.get("vid_ode").family == "predictor" and model.continuous_time
    ctx = _clips()[:, :3]
    with pytest.raises(VidynError, match="strictly increasing"):
        model(ctx, torch.tensor([0.0, 0.2, 0.1]), torch.tensor([0.3]))
    with pytest.raises(VidynError, match="first context time"):
        model(ctx, torch.tensor([0.0, 0.1, 0.2]), torch.tensor([-0.1]))
    with pytest.raises(VidynError, match="channels|frames"):
        model(ctx[:, :, :1], torch.tensor([0.0, 0.1, 0.2]), torch.tensor([0.3]))
    with pytest.raises(VidynError, match="shape"):
        model(ctx, torch.tensor([0.0, 0.1]), torch.tensor([0.3]))
    with pytest.raises(VidynError, match="decoder_method"):
        vid_ode_tiny(decoder_method="rk45")
