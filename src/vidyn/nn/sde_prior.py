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
from torch.distributions import Normal, kl_divergence

from vidyn.nn.sde import randn_like


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


class CodeSampler(nn.Module):
    """A learned sampling prior over z0 with a global code: a conditional VAE fitted to the posterior's z0.

    The ELBO's prior p(z0 | c) stays a Gaussian per cell (it keeps the dynamics in the prior drift, see
    the module docstring); this second model is fitted, beside it and on detached inputs, to the
    posterior's samples z0 ~ q(z0 | x) given the same condition map c, and `sample` draws z0 from it:
        v ~ p(v | c) = N(mu(c), sigma(c))  (`code` dims, one draw per clip: the law's random parameters),
        z0 ~ N(m(c, v), s(c, v))           (per cell, given the code),
    trained on -log p(z0 | c, v) + KL(r(v | z0, c) || p(v | c)) with v ~ r (a conditional VAE, Sohn et al.,
    NeurIPS 2015). This is ex-post density estimation of the aggregate posterior (Ghosh et al., "From
    Variational to Deterministic Autoencoders", ICLR 2020; the two-stage priors of VQ-VAE and of Dai & Wipf,
    ICLR 2019): the posterior's z0, with the prior drift, continues a clip's law; fitted after the fact, a
    richer prior cannot pull the dynamics into the posterior's drift correction, as the global code and
    the mixture inside the ELBO did (docs/generation.md). The code enters the decoder as a learned map
    (a linear layer to `(code_channels, S, S)`), so it can act where the object is.
    """

    def __init__(
        self, cond_channels: int, latent_channels: int, latent_size: int, hidden: int, code: int
    ) -> None:
        super().__init__()
        s, self.code, self.code_channels = latent_size, code, 8
        self.shape = (latent_channels, s, s)
        self.posterior = nn.Sequential(
            _pooled(cond_channels + latent_channels, hidden, s), nn.Linear(hidden, 2 * code)
        )
        self.prior = nn.Sequential(_pooled(cond_channels, hidden, s), nn.Linear(hidden, 2 * code))
        self.code_map = nn.Linear(code, self.code_channels * s * s)
        self.decoder = nn.Sequential(
            nn.Conv2d(cond_channels + self.code_channels, hidden, 3, 1, 1), nn.SiLU(),
            nn.Conv2d(hidden, hidden, 3, 1, 1), nn.SiLU(),
            nn.Conv2d(hidden, 2 * latent_channels, 3, 1, 1),
        )  # fmt: skip

    def _decode(self, cond_map: Tensor, v: Tensor) -> Normal:
        n, _, s, _ = cond_map.shape
        code = self.code_map(v).view(n, self.code_channels, s, s)  # (N, code) -> (N, 8, S, S)
        return self._normal(self.decoder(torch.cat([cond_map, code], dim=1)))

    @staticmethod
    def _normal(out: Tensor) -> Normal:
        mean, log_std = out.chunk(2, dim=1)
        return Normal(mean, log_std.clamp(-7, 2).exp())

    def loss(self, z0: Tensor, cond_map: Tensor, noise: Tensor) -> Tensor:
        """Negative ELBO of z0 `(N, C_z, S, S)` under the sampler, per clip `(N,)`; `noise` `(N, code)` is
        the standard normal draw of the reparameterised code. Inputs are detached here."""
        z0, cond_map = z0.detach(), cond_map.detach()
        r = self._normal(self.posterior(torch.cat([cond_map, z0], dim=1)))
        v = r.loc + r.scale * noise
        nll = -self._decode(cond_map, v).log_prob(z0).sum((1, 2, 3))
        return nll + kl_divergence(r, self._normal(self.prior(cond_map))).sum(1)

    def sample(self, cond_map: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """z0 `(N, C_z, S, S)`: a code per clip from p(v | c), then z0 from p(z0 | c, v)."""
        p = self._normal(self.prior(cond_map))
        v = p.loc + p.scale * randn_like(p.loc, generator)
        q = self._decode(cond_map, v)
        return q.loc + q.scale * randn_like(q.loc, generator)


def _pooled(in_channels: int, hidden: int, size: int) -> nn.Sequential:
    """`(N, in, S, S) -> (N, hidden)`: two 3x3 convs (the second of stride 2), then a linear layer."""
    half = (size + 1) // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden, 3, 1, 1), nn.SiLU(),
        nn.Conv2d(hidden, hidden, 3, 2, 1), nn.SiLU(),
        nn.Flatten(), nn.Linear(hidden * half * half, hidden), nn.SiLU(),
    )  # fmt: skip
