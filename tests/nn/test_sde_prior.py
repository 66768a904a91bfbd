"""The priors over z0: the mixture (its density, KL estimate and one component per clip) and the z0 sampler
(its conditional-VAE bound, a coherent draw per clip, and its isolation from the ELBO)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.distributions import Normal

import vidyn
from vidyn.errors import VidynError
from vidyn.models.interface import Condition
from vidyn.nn.sde_prior import CodeSampler, MixturePrior


def _prior(components: int = 3) -> MixturePrior:
    torch.manual_seed(0)
    return MixturePrior(
        nn.Conv2d(5, components * 2 * 2, 1), cond_channels=5, latent_channels=2, components=components
    )


def test_kl_is_log_q_minus_the_mixture_log_density() -> None:
    prior = _prior()
    cond = torch.randn(4, 5, 3, 3)
    q = Normal(torch.randn(4, 2, 3, 3), torch.rand(4, 2, 3, 3) + 0.5)
    z0 = q.sample()
    log_w, comps = prior(cond)
    assert log_w.shape == (4, 3) and comps.loc.shape == (4, 3, 2, 3, 3)
    torch.testing.assert_close(log_w.exp().sum(1), torch.ones(4))
    for i in range(4):  # the mixture density written out, one clip at a time
        dens = sum(log_w[i, k].exp() * comps.log_prob(z0.unsqueeze(1))[i, k].sum().exp() for k in range(3))
        want = q.log_prob(z0)[i].sum() - torch.log(dens)
        torch.testing.assert_close(prior.kl(q, z0, cond)[i], want, rtol=1e-4, atol=1e-4)


def test_identical_components_give_the_gaussian_kl_in_expectation() -> None:
    """With every component the same Gaussian, the estimate averages to the analytic KL."""
    prior = _prior(components=2)
    with torch.no_grad():
        prior.net.weight.zero_()
        prior.net.bias.copy_(torch.tensor([0.3, -0.2, math.log(0.8), math.log(1.2)] * 2))
    cond = torch.randn(1, 5, 3, 3).expand(20000, -1, -1, -1)
    q = Normal(torch.full((20000, 2, 3, 3), 0.5), torch.full((20000, 2, 3, 3), 0.7))
    p = Normal(torch.tensor([0.3, -0.2]).view(1, 2, 1, 1), torch.tensor([0.8, 1.2]).view(1, 2, 1, 1))
    analytic = torch.distributions.kl_divergence(q, p.expand(q.batch_shape)).sum((1, 2, 3))[0]
    estimate = prior.kl(q, q.sample(), cond).mean()
    assert abs(float(estimate.detach() - analytic)) < 0.05 * float(analytic) + 0.05


def test_sampling_draws_one_component_per_clip_from_the_weights() -> None:
    prior = _prior()
    with torch.no_grad():
        prior.net.weight.zero_()
        # per component [mean, mean, log-std, log-std] over the 2 latent channels; tiny stds
        prior.net.bias.copy_(torch.tensor([[m, m, -8.0, -8.0] for m in (-5.0, 0.0, 5.0)]).flatten())
        prior.mix.weight.zero_()
        prior.mix.bias.copy_(torch.tensor([0.0, -30.0, 0.0]))  # components 0 and 2, never 1
    cond = torch.randn(400, 5, 3, 3)
    z0 = prior.sample(cond, torch.Generator().manual_seed(1))
    per_clip = z0.flatten(1)
    assert torch.allclose(per_clip, per_clip[:, :1].expand_as(per_clip), atol=1e-2)  # one component per clip
    values = per_clip[:, 0]
    assert set(values.round().tolist()) == {-5.0, 5.0}
    assert 0.4 < float((values > 0).float().mean()) < 0.6
    again = prior.sample(cond, torch.Generator().manual_seed(1))
    assert torch.equal(z0, again)


def test_sde_video_trains_and_samples_with_a_mixture_prior() -> None:
    torch.manual_seed(0)
    model = vidyn.build_model("sde_video_tiny", num_classes=3, z0_components=4)
    frames, times = torch.rand(2, 5, 1, 16, 16), torch.arange(5) * 0.1
    out = model.elbo(frames, times, num_context=1, labels=torch.tensor([0, 2]))
    assert torch.isfinite(out["loss"]) and torch.isfinite(out["kl_z0"])
    out["loss"].backward()
    assert model.prior_mixture.mix.weight.grad.abs().sum() > 0
    cond = Condition(labels=torch.tensor([1, 1]))
    with torch.no_grad():
        a = model.sample(2, times, condition=cond, generator=torch.Generator().manual_seed(0))
        b = model.sample(2, times, condition=cond, generator=torch.Generator().manual_seed(0))
    assert a.shape == (2, 5, 1, 16, 16) and torch.equal(a, b)
    assert not hasattr(vidyn.build_model("sde_video_tiny"), "prior_mixture")  # default: one Gaussian


def _sampler() -> CodeSampler:
    torch.manual_seed(0)
    return CodeSampler(cond_channels=3, latent_channels=2, latent_size=4, hidden=16, code=2)


def test_the_sampler_loss_is_the_conditional_vae_bound_written_out() -> None:
    sampler = _sampler()
    cond, z0, noise = torch.randn(5, 3, 4, 4), torch.randn(5, 2, 4, 4), torch.randn(5, 2)
    r_mean, r_log_std = sampler.posterior(torch.cat([cond, z0], 1)).chunk(2, 1)
    p_mean, p_log_std = sampler.prior(cond).chunk(2, 1)
    v = r_mean + r_log_std.exp() * noise
    code = sampler.code_map(v).view(5, 8, 4, 4)
    d_mean, d_log_std = sampler.decoder(torch.cat([cond, code], 1)).chunk(2, 1)
    nll = 0.5 * ((z0 - d_mean) / d_log_std.exp()).square() + d_log_std + 0.5 * math.log(2 * math.pi)
    kl = (
        p_log_std
        - r_log_std
        + ((r_log_std.exp()) ** 2 + (r_mean - p_mean) ** 2) / (2 * (2 * p_log_std).exp())
    )
    want = nll.sum((1, 2, 3)) + (kl - 0.5).sum(1)
    torch.testing.assert_close(sampler.loss(z0, cond, noise), want, rtol=1e-4, atol=1e-3)


def test_the_sampler_learns_one_coherent_draw_per_clip() -> None:
    """z0 is +1 on every cell or -1 on every cell, half the clips each: a Gaussian per cell could only give
    noise around 0 per cell; the sampler's global code must make each sample one sign throughout."""
    sampler = _sampler()
    opt = torch.optim.Adam(sampler.parameters(), lr=3e-3)
    cond = torch.zeros(64, 3, 4, 4)
    for _ in range(400):
        sign = torch.randint(0, 2, (64, 1, 1, 1)).float() * 2 - 1
        z0 = sign.expand(64, 2, 4, 4) + 0.05 * torch.randn(64, 2, 4, 4)
        loss = sampler.loss(z0, cond, torch.randn(64, 2)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        samples = sampler.sample(torch.zeros(400, 3, 4, 4), torch.Generator().manual_seed(0)).flatten(1)
    per_clip_sign = samples.sign().mean(1)  # +-1 when every cell of a sample has one sign
    # a Gaussian per cell fitted to these z0 is N(0, 1) per cell: ~0 of its samples one sign throughout;
    # the code's Gaussian prior leaves some mass between the two draws (0.77 coherent after 400 steps,
    # 0.87 after 1,000)
    assert float((per_clip_sign.abs() > 0.9).float().mean()) > 0.7
    assert 0.3 < float((per_clip_sign > 0).float().mean()) < 0.7  # both draws, about half each
    assert float((samples.abs() - 1).abs().median()) < 0.35  # near +-1, not shrunk towards the mean 0
    again = sampler.sample(torch.zeros(400, 3, 4, 4), torch.Generator().manual_seed(0)).flatten(1)
    assert torch.equal(samples, again)


def test_sde_video_fits_the_sampler_to_the_posterior_without_touching_the_elbo() -> None:
    torch.manual_seed(0)
    model = vidyn.build_model("sde_video_tiny", num_classes=3, z0_sampler_code=4)
    frames, times = torch.rand(2, 5, 1, 16, 16), torch.arange(5) * 0.1
    out = model.elbo(frames, times, num_context=1, labels=torch.tensor([0, 2]))
    assert float(out["z0_sampler"]) != 0
    out["z0_sampler"].backward()  # the sampler's loss alone reaches only the sampler
    own = {id(p) for p in model.z0_sampler.parameters()}
    elbo_grads = [p.grad for p in model.parameters() if id(p) not in own]
    assert all(g is None or not g.any() for g in elbo_grads)
    assert any(p.grad is not None and p.grad.any() for p in model.z0_sampler.parameters())
    cond = Condition(labels=torch.tensor([1, 1]))
    with torch.no_grad():
        a = model.sample(2, times, condition=cond, generator=torch.Generator().manual_seed(0))
        b = model.sample(2, times, condition=cond, generator=torch.Generator().manual_seed(0))
    assert a.shape == (2, 5, 1, 16, 16) and torch.equal(a, b)
    assert vidyn.build_model("sde_video_tiny").z0_sampler is None  # default: z0 from the ELBO's prior


@pytest.mark.parametrize("args", [{"z0_sampler_code": -1}, {"z0_sampler_code": 4, "z0_components": 2}])
def test_bad_sampler_arguments_are_one_line_errors(args: dict) -> None:
    with pytest.raises(VidynError, match="z0_sampler_code"):
        vidyn.build_model("sde_video_tiny", num_classes=3, **args)
