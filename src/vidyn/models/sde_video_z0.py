"""sde_video's distribution of the initial latent z0 given the condition c, as methods of the model (the
parameters keep their names in `SDEVideo`'s state dict).

- p(z0 | c): a Gaussian per latent cell (`to_prior_z0`), or with `z0_components` > 1 a mixture with one
  component per clip (`prior_mixture`, `vidyn.nn.sde_prior.MixturePrior`); the ELBO's KL(q(z0 | x) ||
  p(z0 | c)) is taken against it.
- What samples start from: p(z0 | c), or with `z0_sampler` "imle" an `ImleSampler` fitted beside the ELBO
  to q(z0 | x) (`z0_imle`), or with "imle_prompted" the sampler for samples with a class label and p(z0 | c)
  for the others (docs/generation.md, sessions 22-23).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.distributions import Normal, kl_divergence

from vidyn.errors import VidynError
from vidyn.nn.sde import ConditionMaps, randn_like
from vidyn.nn.sde_nets import conv_net
from vidyn.nn.sde_prior import ImleSampler, MixturePrior


class Z0Prior:
    """Mixed into `SDEVideo` (an `nn.Module`): builds and uses the z0 prior and sampler."""

    z0_imle: ImleSampler | None
    prior_mixture: MixturePrior
    to_prior_z0: nn.Module

    def _build_prior_z0(
        self, cond_channels: int, hidden: int, zc: int, components: int, sampler: str
    ) -> None:
        """p(z0 | c): a Gaussian per latent cell (`to_prior_z0`), or with `components` > 1 a mixture with
        one component per clip (`prior_mixture`, vidyn.nn.sde_prior); with `sampler` "imle" the z0 of
        samples ("imle_prompted": of prompted samples) comes from an `ImleSampler` (`z0_imle`, twice
        `hidden` wide) fitted beside the ELBO."""
        if sampler not in ("prior", "imle", "imle_prompted"):
            raise VidynError(f"z0_sampler must be 'prior', 'imle' or 'imle_prompted'; got {sampler!r}")
        self.z0_imle, self.z0_sampler = None, sampler
        if sampler != "prior":
            with torch.random.fork_rng(devices=[]):  # initialised off the global stream: the ELBO's
                self.z0_imle = ImleSampler(cond_channels, zc, 2 * hidden)  # networks get the same weights
        self.z0_components = components
        if components > 1:
            net = conv_net(cond_channels, hidden, components * 2 * zc, layers=1)
            self.prior_mixture = MixturePrior(net, cond_channels, zc, components)
        else:
            self.to_prior_z0 = conv_net(cond_channels, hidden, 2 * zc, layers=1)

    def _prior_z0(self, cond: ConditionMaps) -> Normal:
        mean, log_std = self.to_prior_z0(cond.map).chunk(2, dim=1)
        return Normal(mean, log_std.exp())

    def _kl_z0(self, q_z0: Normal, z0: Tensor, cond: ConditionMaps) -> Tensor:
        """KL(q(z0 | x) || p(z0 | c)), mean over clips (the mixture's: a single-sample estimate at z0)."""
        if self.z0_components > 1:
            return self.prior_mixture.kl(q_z0, z0, cond.map).mean()
        return kl_divergence(q_z0, self._prior_z0(cond)).sum((1, 2, 3)).mean()

    def _draw_z0(
        self, cond: ConditionMaps, generator: torch.Generator | None, labels: Tensor | None
    ) -> Tensor:
        """z0 of samples: from the IMLE sampler when there is one ("imle_prompted": for the samples with a
        class label only), else from p(z0 | c)."""
        imle = torch.full((cond.map.shape[0],), self.z0_imle is not None)
        if self.z0_sampler == "imle_prompted":
            imle = labels.cpu() >= 0 if labels is not None else ~imle
        if bool(imle.all()):
            return self.z0_imle(cond.map, generator)
        if self.z0_components > 1:
            z0 = self.prior_mixture.sample(cond.map, generator)
        else:
            prior = self._prior_z0(cond)
            z0 = prior.loc + prior.scale * randn_like(prior.loc, generator)
        if bool(imle.any()):
            z0 = torch.where(imle.to(z0.device).view(-1, 1, 1, 1), self.z0_imle(cond.map, generator), z0)
        return z0
