"""The z0 priors and samplers of sde_video: the mixture prior (density, KL estimate, one component per
clip), the conditional-IMLE sampler (it covers every mode of a multimodal target, it does not average) and
the law reader that chooses a prompted sample's z0 among draws."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import Tensor, nn
from torch.distributions import Normal

import vidyn
from vidyn.errors import VidynError
from vidyn.models.interface import Condition
from vidyn.nn.sde_prior import ImleSampler, LawReader, MixturePrior


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


def test_imle_sampler_draws_the_modes_not_their_average() -> None:
    """Two conditions, each with targets at two opposite maps (+-1 for condition 0, +-2 for condition
    1): a regression onto the targets would return 0, the fitted sampler draws each condition's two modes."""
    torch.manual_seed(0)
    sampler = ImleSampler(cond_channels=1, latent_channels=2, hidden=16, code=4, cell_noise=1, draws=8)
    opt = torch.optim.Adam(sampler.parameters(), 3e-3)
    cond = torch.cat([torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4)]).repeat(16, 1, 1, 1)  # (32, 1, 4, 4)
    scale = cond[:, :1].mul(1).add(1)  # 1 for condition 0, 2 for condition 1
    for step in range(300):
        gen = torch.Generator().manual_seed(step)
        sign = torch.randint(0, 2, (32, 1, 1, 1), generator=gen) * 2 - 1
        target = (sign * scale).expand(-1, 2, -1, -1)
        loss = sampler.loss(cond, target, torch.ones_like(target), gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        draws = sampler(cond.repeat(8, 1, 1, 1), torch.Generator().manual_seed(99)).mean((1, 2, 3))  # (256,)
    want = cond.repeat(8, 1, 1, 1)[:, 0, 0, 0] + 1  # each draw's mode magnitude
    ratio = draws / want  # +-1 on a mode, 0 for the average
    assert float(((ratio.abs() - 1).abs() < 0.3).float().mean()) > 0.6, "most draws should sit on a mode"
    assert float((ratio.abs() < 0.3).float().mean()) < 0.2, "few draws may fall near the modes' average"
    for c in (0, 1):
        positive = float((draws[want == c + 1] > 0).float().mean())
        assert 0.2 < positive < 0.8, (
            f"condition {c}: both modes must be drawn (positive share {positive:.2f})"
        )
    again = sampler(cond, torch.Generator().manual_seed(5))
    assert torch.equal(again, sampler(cond, torch.Generator().manual_seed(5)))


def test_sde_video_fits_and_samples_from_an_imle_sampler() -> None:
    """With z0_sampler "imle" the ELBO gains the sampler's term, which trains the sampler and nothing
    else (its inputs are detached), and samples start from the sampler's draws."""
    torch.manual_seed(0)
    model = vidyn.build_model("sde_video_tiny", num_classes=3, z0_sampler="imle")
    frames, times = torch.rand(2, 5, 1, 16, 16), torch.arange(5) * 0.1
    out = model.elbo(frames, times, num_context=1, labels=torch.tensor([0, 2]))
    assert out["z0_sampler"] > 0
    others = [p for n, p in model.named_parameters() if not n.startswith("z0_imle.")]
    assert all(g is None for g in torch.autograd.grad(out["z0_sampler"], others, allow_unused=True))
    out["loss"].backward()
    assert model.z0_imle.net[0].weight.grad.abs().sum() > 0
    cond = Condition(frames=frames[:1, :1], times=times[:1], labels=torch.tensor([1]))
    with torch.no_grad():
        a = model.sample(3, times, condition=cond, generator=torch.Generator().manual_seed(0))
        b = model.sample(3, times, condition=cond, generator=torch.Generator().manual_seed(0))
        model.z0_imle.net[-1].bias.add_(1.0)  # the samples' z0 comes from the sampler
        c = model.sample(3, times, condition=cond, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert vidyn.build_model("sde_video_tiny").z0_imle is None  # default: the ELBO's prior
    with pytest.raises(VidynError, match="z0_sampler must be 'prior', 'imle' or 'imle_prompted'"):
        vidyn.build_model("sde_video_tiny", z0_sampler="gan")


def test_imle_prompted_draws_only_prompted_samples_from_the_sampler() -> None:
    """With z0_sampler "imle_prompted" a sample with a class label starts from the sampler, one without
    from p(z0 | c): moving the sampler's output moves exactly the prompted samples."""
    torch.manual_seed(0)
    model = vidyn.build_model("sde_video_tiny", num_classes=3, z0_sampler="imle_prompted").eval()
    frames, times = torch.rand(1, 1, 1, 16, 16), torch.arange(5) * 0.1
    labels = torch.tensor([1, -1, 2, -1])
    draws = []
    with torch.no_grad():
        for shift in (0.0, 1.0):
            model.z0_imle.net[-1].bias.add_(shift)
            for lab in (labels, None):
                cond = Condition(frames=frames, times=times[:1], labels=lab)
                draws.append(
                    model.sample(4, times, condition=cond, generator=torch.Generator().manual_seed(0))
                )
    moved = (draws[0] - draws[2]).abs().flatten(1).amax(1)
    assert moved[0] > 1e-3 and moved[2] > 1e-3 and moved[1] == 0 and moved[3] == 0
    assert torch.equal(draws[1], draws[3])  # no prompt at all: the prior only


def test_imle_sampler_leaves_the_global_random_stream_alone() -> None:
    """The sampler is initialised off the global random stream and, fitted in training (no generator),
    draws from its own: the ELBO's networks, its value and the random draws after it are those of a model
    without the sampler."""
    frames, times = torch.rand(2, 5, 1, 16, 16), torch.arange(5) * 0.1
    after = []
    for sampler in ("prior", "imle"):
        torch.manual_seed(0)
        model = vidyn.build_model("sde_video_tiny", num_classes=3, z0_sampler=sampler)
        torch.manual_seed(1)
        out = model.elbo(frames, times, num_context=1, labels=torch.tensor([0, 2]))
        after.append((out["loss"] - out["z0_sampler"], torch.rand(3)))
    torch.testing.assert_close(after[0][0], after[1][0], rtol=0, atol=0)  # same weights, same draws
    assert torch.equal(after[0][1], after[1][1])


def test_law_reader_learns_a_class_from_a_latent_map_and_chooses_the_draw_of_the_asked_class() -> None:
    """Fitted to maps whose class is where a blob sits (not their mean or scale), the reader tells the
    classes apart on new maps, and of K draws it returns, per sample, the one of the asked class."""
    torch.manual_seed(0)
    reader = LawReader(latent_channels=2, hidden=16, num_classes=3)
    opt = torch.optim.Adam(reader.parameters(), 1e-2)

    def maps(classes: Tensor) -> Tensor:  # a unit blob in corner 0, 1 or 2 of a noisy (2, 6, 6) map
        z = 0.3 * torch.randn(classes.numel(), 2, 6, 6)
        for i, c in enumerate(classes.tolist()):
            z[i, :, 3 * (c % 2) : 3 * (c % 2) + 3, 3 * (c // 2) : 3 * (c // 2) + 3] += 1.0
        return z

    for _ in range(150):
        y = torch.randint(0, 3, (32,))
        loss = reader.loss(maps(y), torch.where(torch.rand(32) < 0.2, -1, y))  # unlabelled clips skipped
        opt.zero_grad()
        loss.backward()
        opt.step()
    y = torch.randint(0, 3, (64,))
    with torch.no_grad():
        assert float((reader(maps(y)).argmax(1) == y).float().mean()) > 0.9
        perm = torch.randperm(3)
        draws = maps(perm.repeat(8)).view(8, 3, 2, 6, 6)  # (N, K=3, C, S, S): draw j is of class perm[j]
        asked = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
        chosen = reader.choose(draws, asked)
    truth = torch.stack([draws[i, perm.tolist().index(int(a))] for i, a in enumerate(asked)])
    assert torch.equal(chosen, truth)
    assert reader.loss(maps(y), None) == 0 and reader.loss(maps(y), torch.full((64,), -1)) == 0


def test_sde_video_chooses_a_prompted_samples_z0_among_draws_with_its_law_reader() -> None:
    """With z0_select K the ELBO fits the law reader (its term trains it alone), a prompted sample starts
    from the reader's choice among K draws of the sampler and an unprompted one from the first draw."""
    torch.manual_seed(0)
    model = vidyn.build_model("sde_video_tiny", num_classes=3, z0_sampler="imle_prompted", z0_select=4)
    frames, times = torch.rand(2, 5, 1, 16, 16), torch.arange(5) * 0.1
    out = model.elbo(frames, times, num_context=1, labels=torch.tensor([0, 2]), drop_condition=1.0)
    assert out["z0_reader"] > 0  # the reader learns the true labels even where the condition dropped them
    others = [p for n, p in model.named_parameters() if not n.startswith("z0_reader.")]
    assert all(g is None for g in torch.autograd.grad(out["z0_reader"], others, allow_unused=True))
    model.eval()
    labels = torch.tensor([1, -1, 2])
    with torch.no_grad():
        cond = model._encode_condition(None, labels, 3)
        z0 = model._draw_z0(cond, torch.Generator().manual_seed(0), labels)
        many = dataclasses.replace(cond, map=cond.map.repeat_interleave(4, 0))
        draws = model._draw_z0_once(many, torch.Generator().manual_seed(0), labels.repeat_interleave(4))
        draws = draws.view(3, 4, *z0.shape[1:])
        logp = model.z0_reader(draws.flatten(0, 1)).log_softmax(1).view(3, 4, 3)
    for i, label in ((0, 1), (2, 2)):
        assert torch.equal(z0[i], draws[i, int(logp[i, :, label].argmax())])
    assert torch.equal(z0[1], draws[1, 0])
    assert vidyn.build_model("sde_video_tiny").z0_reader is None  # default: no selection
    with pytest.raises(VidynError, match="z0_select must be 1, or > 1 with num_classes > 0"):
        vidyn.build_model("sde_video_tiny", z0_select=4)


def test_a_reader_with_a_fake_class_passes_over_draws_off_the_posterior() -> None:
    """Taught the sampler's draws as one more class, the reader chooses, of two draws with the asked
    class's blob, the one like the posterior's (unit blob) over the sampler's overdone one (triple blob),
    which a reader without that class picks no less often."""

    def maps(classes: Tensor, amplitude: float) -> Tensor:  # a blob in corner 0, 1 or 2 of a noisy map
        z = 0.3 * torch.randn(classes.numel(), 2, 6, 6)
        for i, c in enumerate(classes.tolist()):
            z[i, :, 3 * (c % 2) : 3 * (c % 2) + 3, 3 * (c // 2) : 3 * (c // 2) + 3] += amplitude
        return z

    chose_real = {}
    for fake in (False, True):
        torch.manual_seed(0)
        reader = LawReader(latent_channels=2, hidden=16, num_classes=3, fake_class=fake)
        opt = torch.optim.Adam(reader.parameters(), 1e-2)
        for _ in range(200):
            y = torch.randint(0, 3, (32,))
            loss = reader.loss(maps(y, 1.0), y, fakes=maps(torch.randint(0, 3, (32,)), 3.0))
            opt.zero_grad()
            loss.backward()
            opt.step()
        asked = torch.randint(0, 3, (64,))
        with torch.no_grad():
            draws = torch.stack([maps(asked, 3.0), maps(asked, 1.0)], dim=1)  # (N, K=2, C, S, S)
            chosen = reader.choose(draws, asked)
        chose_real[fake] = float((chosen == draws[:, 1]).flatten(1).all(1).float().mean())
    assert reader(maps(asked, 1.0)).shape == (64, 4)
    assert chose_real[True] > 0.95 and chose_real[False] < 0.5


def test_sde_video_reader_fake_learns_the_samplers_draws_off_the_global_stream() -> None:
    """z0_reader_fake: the reader has a class for the sampler's draws, its term trains it alone, and the
    ELBO's value and the random stream after it are those of a model without the option."""
    frames, times = torch.rand(2, 5, 1, 16, 16), torch.arange(5) * 0.1
    after = []
    for fake in (False, True):
        torch.manual_seed(0)
        model = vidyn.build_model(
            "sde_video_tiny", num_classes=3, z0_sampler="imle_prompted", z0_select=4, z0_reader_fake=fake
        )
        torch.manual_seed(1)
        out = model.elbo(frames, times, num_context=1, labels=torch.tensor([0, 2]))
        after.append((out["loss"] - out["z0_sampler"] - out["z0_reader"], torch.rand(3)))
    assert model.z0_reader.net[-1].out_features == 4 and out["z0_reader"] > 0
    others = [p for n, p in model.named_parameters() if not n.startswith("z0_reader.")]
    assert all(g is None for g in torch.autograd.grad(out["z0_reader"], others, allow_unused=True))
    torch.testing.assert_close(after[0][0], after[1][0], rtol=0, atol=0)
    assert torch.equal(after[0][1], after[1][1])
    with pytest.raises(VidynError, match="z0_reader_fake needs a law reader and a sampler"):
        vidyn.build_model("sde_video_tiny", num_classes=3, z0_select=4, z0_reader_fake=True)
