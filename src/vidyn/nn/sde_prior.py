"""A mixture prior over a latent map's initial state: one component chosen for the whole map.

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
