"""The mixture prior over z0: its density, its KL estimate and its sampling of one component per clip."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Normal

import vidyn
from vidyn.models.interface import Condition
from vidyn.nn.sde_prior import MixturePrior


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
