"""Priors and samplers over a latent map's initial state z0 for `sde_video`: a mixture prior with one
component chosen for the whole map (`MixturePrior`), and a sampler fitted to the posterior's z0 by
conditional IMLE (`ImleSampler`, below).

`sde_video`'s prior p(z0 | c) is a Gaussian per latent cell. Diagnosed on the shipped model
(docs/generation.md), that is where prompted samples lose the law: started from a posterior z0 the prior
drift continues the clip's law (86% judged right), from a prior z0 it does not (33%), because a per-cell
Gaussian can only offer the average motion plus independent noise per cell, not one coherent draw of a
law's direction, speed and phase. A mixture with a global choice can: p(z0 | c) = sum_k pi_k(c)
N(z0; mu_k(c), sigma_k(c)), the component k drawn once per clip (as the mixture priors of Dilokthanakul
et al., "Deep Unsupervised Clustering with Gaussian Mixture VAEs", 2016, and the VampPrior of Tomczak &
Welling, AISTATS 2018, with the conditioning of a conditional VAE).

The KL from the posterior q(z0 | x) has no closed form; it is estimated with the posterior sample the
ELBO already draws: log q(z0) - log p(z0), an unbiased single-sample estimate, as the path KL is.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.distributions import Normal

from vidyn.nn.sde_nets import conv_net


class MixturePrior(nn.Module):
    """p(z0 | c) with `components` Gaussians over the `(C_z, S, S)` map and a global choice among them.

    `net` maps the condition map `(N, cond, S, S)` to `(N, components * 2 * C_z, S, S)` (means and log-stds
    per component); the mixture weights come from the condition map averaged over space.
    """

    def __init__(self, net: nn.Module, cond_channels: int, latent_channels: int, components: int) -> None:
        super().__init__()
        self.net, self.latent_channels, self.components = net, latent_channels, components
        self.mix = nn.Linear(cond_channels, components)

    def forward(self, cond_map: Tensor) -> tuple[Tensor, Normal]:
        """(log mixture weights `(N, K)`, the components `Normal` of shape `(N, K, C_z, S, S)`)."""
        n, _, s, _ = cond_map.shape
        out = self.net(cond_map).view(n, self.components, 2 * self.latent_channels, s, s)
        mean, log_std = out.chunk(2, dim=2)
        return torch.log_softmax(self.mix(cond_map.mean((2, 3))), dim=1), Normal(mean, log_std.exp())

    def kl(self, q: Normal, z0: Tensor, cond_map: Tensor) -> Tensor:
        """Single-sample estimate of KL(q || p) per clip `(N,)`, at z0 `(N, C_z, S, S)` drawn from q."""
        log_w, comps = self(cond_map)
        log_p = torch.logsumexp(log_w + comps.log_prob(z0.unsqueeze(1)).sum((2, 3, 4)), dim=1)  # (N,)
        return q.log_prob(z0).sum((1, 2, 3)) - log_p

    def sample(self, cond_map: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """z0 `(N, C_z, S, S)`: a component per clip, then a Gaussian draw (the generator's noise)."""
        log_w, comps = self(cond_map)
        probs = log_w.exp().to(generator.device if generator is not None else log_w.device)
        k = torch.multinomial(probs, 1, generator=generator).to(log_w.device)  # (N, 1)
        idx = k.view(-1, 1, 1, 1, 1).expand(-1, 1, *comps.loc.shape[2:])
        loc, scale = comps.loc.gather(1, idx).squeeze(1), comps.scale.gather(1, idx).squeeze(1)
        noise = torch.randn(loc.shape, generator=generator, device=probs.device).to(loc)
        return loc + scale * noise


class ImleSampler(nn.Module):
    """z0 `(N, C_z, S, S)` = G(c, v, e) for a condition map c, a per-clip code v ~ N(0, I) (`code`-d,
    broadcast over the map: one coherent draw per clip) and per-cell noise e (`cell_noise` channels).

    Fitted to the posterior means by conditional IMLE (Li & Malik, "Implicit Maximum Likelihood
    Estimation", 2018; Li, Zhang & Malik, "Diverse Image Synthesis from Semantic Layouts via Conditional
    IMLE", ICCV 2019): for each training clip, `draws` samples are drawn given its condition and the
    nearest one, in the metric of the clip's posterior q(z0 | x), is pulled onto its mean (`loss`). Every
    clip's z0 is thus near some draw, so a draw lands on one of the modes (a law's direction, speed,
    phase) instead of their average, which is what a Gaussian fitted by the KL does (module docstring).
    This is ex-post density estimation (Ghosh et al., "From Variational to Deterministic Autoencoders",
    ICLR 2020): the inputs are detached, so the sampler never shapes the ELBO's encoder or prior; it only
    replaces p(z0 | c) when sampling.
    """

    def __init__(
        self, cond_channels: int, latent_channels: int, hidden: int, *, code: int = 16, cell_noise: int = 4,
        draws: int = 8,
    ) -> None:  # fmt: skip
        super().__init__()
        self.code, self.cell_noise, self.draws = code, cell_noise, draws
        self.net = conv_net(cond_channels + code + cell_noise, hidden, latent_channels, layers=3)
        self._stream: torch.Generator | None = None

    def own_stream(self, device: torch.device) -> torch.Generator:
        if self._stream is None or self._stream.device != device:
            self._stream = torch.Generator(device).manual_seed(torch.initial_seed() % 2**63 + 1)
        return self._stream

    def forward(self, cond_map: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One z0 draw per condition `(N, cond, S, S)` -> `(N, C_z, S, S)`, from `generator`'s noise."""
        n, _, s, _ = cond_map.shape
        device = generator.device if generator is not None else cond_map.device
        v = torch.randn(n, self.code, 1, 1, generator=generator, device=device).to(cond_map)
        e = torch.randn(n, self.cell_noise, s, s, generator=generator, device=device).to(cond_map)
        return self.net(torch.cat([cond_map, v.expand(-1, -1, s, s), e], dim=1))

    def loss(
        self, cond_map: Tensor, mean: Tensor, std: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """IMLE under the posterior's own metric: per clip, `draws` draws given its condition, and the one
        of highest posterior density is pulled up it, i.e. mean over clips of min over draws of
        mean((z - mean)^2 / std^2) (-log q(z | x) up to constants, per element). All inputs are detached
        (only the sampler learns from it). Without `generator` the draws come from the sampler's own
        stream (seeded from the run's seed), so the global random stream, and with it the ELBO's training,
        is the same as without the sampler."""
        n, k = mean.shape[0], self.draws
        generator = generator if generator is not None else self.own_stream(cond_map.device)
        z = self(cond_map.detach().repeat_interleave(k, 0), generator)  # (N*k, C_z, S, S)
        err = (z.view(n, k, *mean.shape[1:]) - mean.detach().unsqueeze(1)) / std.detach().unsqueeze(1)
        return err.square().mean((2, 3, 4)).min(dim=1).values.mean()


class LawReader(nn.Module):
    """A classifier of the class (the motion law) from a latent map z0 `(N, C_z, S, S)`, fitted beside the
    ELBO to the posterior's z0 of labelled training clips (detached: it shapes nothing else), and used at
    sampling time to choose, among K draws of z0 for a prompted sample, the one it reads as the
    asked class most surely (`choose`).

    This is rejection sampling towards a learned classifier in the latent space (the selection form of
    classifier guidance, Dhariwal & Nichol, "Diffusion Models Beat GANs on Image Synthesis", 2021; of
    discriminator rejection sampling, Azadi et al., ICLR 2019): a sampler's draws that miss the asked law
    (e.g. the draws IMLE leaves unpulled, `ImleSampler`) are passed over. It reads z0 only, the state the
    prior drift continues, not pixels, so it costs K sampler draws and a small conv net per sample.

    With `fake_class` it has one more class, the sampler's own draws (`loss`'s `fakes`), as the
    discriminator of a semi-supervised GAN (Salimans et al., NeurIPS 2016; Odena, 2016) has: the
    probability of the asked class, taken over the classes and the fake one, is then low for a draw off
    the posterior's distribution, where a reader without it would answer with confidence it has not earned
    (docs/generation.md, sessions 24 and 26).
    """

    def __init__(
        self, latent_channels: int, hidden: int, num_classes: int, *, fake_class: bool = False
    ) -> None:
        super().__init__()
        self.num_classes, self.fake_class = num_classes, fake_class
        self.net = nn.Sequential(
            nn.Conv2d(latent_channels, hidden, 3, 1, 1), nn.SiLU(),
            nn.Conv2d(hidden, hidden, 3, 2, 1), nn.SiLU(),
            nn.Conv2d(hidden, hidden, 3, 1, 1), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(hidden, num_classes + int(fake_class)),
        )  # fmt: skip

    def forward(self, z0: Tensor) -> Tensor:
        """Class logits `(N, num_classes [+ 1 for the sampler's draws])` of z0 `(N, C_z, S, S)`."""
        return self.net(z0)

    def loss(self, z0: Tensor, labels: Tensor | None, fakes: Tensor | None = None) -> Tensor:
        """Cross-entropy on the clips with a label (>= 0) of the posterior's z0 and, with the fake class,
        on `fakes` (sampler draws, one per labelled clip: the classes stay balanced); all detached; 0
        without labelled clips."""
        if labels is None or not bool((labels >= 0).any()):
            return z0.new_zeros(())
        keep = labels >= 0
        inputs, targets = z0.detach()[keep], labels[keep]
        if self.fake_class and fakes is not None:
            inputs = torch.cat([inputs, fakes.detach()[keep]])
            targets = torch.cat([targets, torch.full_like(targets, self.num_classes)])
        return nn.functional.cross_entropy(self(inputs), targets)

    def choose(self, candidates: Tensor, labels: Tensor) -> Tensor:
        """Of `candidates` `(N, K, C_z, S, S)` for classes `labels` `(N,)` (>= 0), the one of highest
        log-probability of its class per sample `(N, C_z, S, S)` (ties: the first)."""
        n, k = candidates.shape[:2]
        logp = self(candidates.flatten(0, 1)).log_softmax(1).unflatten(0, (n, k))  # (N*K, L) -> (N, K, L)
        score = logp.gather(2, labels.view(n, 1, 1).expand(n, k, 1)).squeeze(2)  # (N, K)
        return candidates[torch.arange(n, device=candidates.device), score.argmax(1)]
