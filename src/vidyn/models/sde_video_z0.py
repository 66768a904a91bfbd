"""sde_video's distribution of the initial latent z0 given the condition c, as methods of the model (the
parameters keep their names in `SDEVideo`'s state dict).

- p(z0 | c): a Gaussian per latent cell (`to_prior_z0`), or with `z0_components` > 1 a mixture with one
  component per clip (`prior_mixture`, `vidyn.nn.sde_prior.MixturePrior`); the ELBO's KL(q(z0 | x) ||
  p(z0 | c)) is taken against it.
- What samples start from: p(z0 | c), or with `z0_sampler` "imle" an `ImleSampler` fitted beside the ELBO
  to q(z0 | x) (`z0_imle`), or with "imle_prompted" the sampler for samples with a class label and p(z0 | c)
  for the others (docs/generation.md, sessions 22-23).
- With `z0_select` K > 1, a prompted sample's z0 is the one of K draws that a `LawReader` (`z0_reader`),
  fitted beside the ELBO to the posterior's z0 of labelled clips, reads as the asked class most surely
  (docs/generation.md, session 24); with `z0_reader_fake` the reader also learns the sampler's draws as a
  class of their own, so it passes over draws unlike the posterior's (session 26).
- The sampler and the reader are fitted on detached inputs and left out of the ELBO's gradient clipping
  (`ex_post_parameters`), so the ELBO trains exactly as without them; `z0_fit_targets` and `z0_fit_loss`
  let them be fitted again on the final networks (`vidyn.tasks.z0_refit`).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn
from torch.distributions import Normal, kl_divergence

from vidyn.errors import VidynError
from vidyn.nn.sde import ConditionMaps, rand_n, randn_like, shared_grid
from vidyn.nn.sde_nets import conv_net, run_conv_gru
from vidyn.nn.sde_prior import ImleSampler, LawReader, MixturePrior


class Z0Prior:
    """Mixed into `SDEVideo` (an `nn.Module`): builds and uses the z0 prior and sampler."""

    z0_imle: ImleSampler | None
    z0_reader: LawReader | None
    prior_mixture: MixturePrior
    to_prior_z0: nn.Module

    def _build_prior_z0(
        self, cond_channels: int, hidden: int, zc: int, components: int, sampler: str, select: int,
        num_classes: int, reader_fake: bool = False,
    ) -> None:  # fmt: skip
        """p(z0 | c): a Gaussian per latent cell (`to_prior_z0`), or with `components` > 1 a mixture with
        one component per clip (`prior_mixture`, vidyn.nn.sde_prior); with `sampler` "imle" the z0 of
        samples ("imle_prompted": of prompted samples) comes from an `ImleSampler` (`z0_imle`, twice
        `hidden` wide) fitted beside the ELBO; with `select` > 1 a `LawReader` (`z0_reader`) chooses a
        prompted sample's z0 among `select` draws (with `reader_fake`, the reader also learns the sampler's
        draws as a class of their own)."""
        if sampler not in ("prior", "imle", "imle_prompted"):
            raise VidynError(f"z0_sampler must be 'prior', 'imle' or 'imle_prompted'; got {sampler!r}")
        if not isinstance(select, int) or select < 1 or (select > 1 and not num_classes):
            raise VidynError(
                f"z0_select must be 1, or > 1 with num_classes > 0 (it reads the prompt); got {select!r}"
            )
        if reader_fake and (select < 2 or sampler == "prior"):
            raise VidynError(
                "z0_reader_fake needs a law reader and a sampler: set z0_select > 1 and z0_sampler imle*"
            )
        self.z0_imle, self.z0_reader, self.z0_sampler, self.z0_select = None, None, sampler, select
        with torch.random.fork_rng(devices=[]):  # initialised off the global stream: the ELBO's
            if sampler != "prior":  # networks get the same weights as without them
                self.z0_imle = ImleSampler(cond_channels, zc, 2 * hidden)
            if select > 1:
                self.z0_reader = LawReader(zc, 2 * hidden, num_classes, fake_class=reader_fake)
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

    def ex_post_parameters(self) -> list[nn.Parameter]:
        """The parameters fitted beside the ELBO on detached inputs (the IMLE sampler, the law reader)."""
        return [p for m in (self.z0_imle, self.z0_reader) if m is not None for p in m.parameters()]

    def _encode_clips(
        self, frames: Tensor, rel: Tensor, num_context: int, labels: Tensor | None, drop_condition: float,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Normal, Tensor, ConditionMaps]:  # fmt: skip
        """Clips `(B, T, C, H, W)` at times `rel` from t_ref `(T,)` -> (the posterior ConvGRU's outputs
        `(B, T, E, S, S)`, q(z0 | x), a draw z0 of it, the prior's condition from the first `num_context`
        frames and `labels`, each dropped per clip with probability `drop_condition`)."""
        b, t = frames.shape[:2]
        emb = self.encoder(frames.flatten(0, 1)).unflatten(0, (b, t))  # (B*T, E, S, S) -> (B, T, E, S, S)
        # Posterior: ConvGRU backwards in time; out[:, i] summarises frames i..T-1.
        gaps = torch.cat([rel.diff(), rel.new_zeros(1)])  # (T,) gap to the next frame
        out = run_conv_gru(self.posterior_rnn, emb, gaps, backwards=True)  # (B, T, E, S, S)
        mean, log_std = self.to_posterior_z0(out[:, 0]).chunk(2, dim=1)  # (B, C_z, S, S) each
        z0 = mean + log_std.exp() * randn_like(mean, generator)
        keep = [rand_n(b, emb, generator) >= drop_condition for _ in range(2)]  # frames, labels
        if labels is not None:
            labels = torch.where(keep[1], labels, torch.full_like(labels, -1))
        ctx = (frames[:, :num_context], emb[:, :num_context], rel[:num_context]) if num_context else None
        return out, Normal(mean, log_std.exp()), z0, self._encode_condition(ctx, labels, b, keep[0])

    def _fit_z0(
        self, cond_map: Tensor, mean: Tensor, std: Tensor, z0: Tensor, labels: Tensor | None,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Tensor]:  # fmt: skip
        """The ex-post fits' losses (IMLE sampler, law reader; 0 without them) on the posterior q(z0 | x)
        `(mean, std)` and its draw z0 of clips with true `labels`, the prior's condition map `cond_map`;
        inputs detached inside."""
        zero = mean.new_zeros(())
        imle = self.z0_imle.loss(cond_map, mean, std, generator) if self.z0_imle is not None else zero
        if self.z0_reader is None:
            return imle, zero
        fakes = None
        if self.z0_reader.fake_class and self.z0_imle is not None:
            with torch.no_grad():  # the sampler's own stream without a generator, as in its loss
                fakes = self.z0_imle(cond_map.detach(), generator or self.z0_imle.own_stream(mean.device))
        return imle, self.z0_reader.loss(z0, labels, fakes)

    def z0_fit_targets(
        self, frames: Tensor, times: Tensor, *, num_context: int, labels: Tensor | None,
        drop_condition: float, generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
        """What the ex-post fits learn from, for clips `(B, T, C, H, W)` at `times` `(T,)`, without
        gradients: (the prior's condition map, as `elbo` builds it with `drop_condition`, the posterior
        q(z0 | x)'s mean and std), e.g. to refit them on the final networks (`vidyn.tasks.z0_refit`)."""
        rel = shared_grid(times, frames.shape[0], "times")
        with torch.no_grad():
            _, q_z0, _, cond = self._encode_clips(
                frames, rel - rel[0], num_context, labels, drop_condition, generator
            )
        return cond.map, q_z0.mean, q_z0.stddev

    def z0_fit_loss(
        self, cond_map: Tensor, mean: Tensor, std: Tensor, labels: Tensor | None, generator: torch.Generator
    ) -> Tensor:
        """The ex-post fits' summed loss on `z0_fit_targets`' output (the reader's z0: a fresh posterior
        draw)."""
        z0 = mean + std * randn_like(mean, generator)
        return sum(self._fit_z0(cond_map, mean, std, z0, labels, generator), mean.new_zeros(()))

    def _draw_z0(
        self, cond: ConditionMaps, generator: torch.Generator | None, labels: Tensor | None
    ) -> Tensor:
        """z0 of samples (`_draw_z0_once`); with the law reader, a prompted sample's is the one of
        `z0_select` draws the reader reads as its class most surely."""
        if self.z0_reader is None or labels is None or not bool((labels >= 0).any()):
            return self._draw_z0_once(cond, generator, labels)
        n, k = cond.map.shape[0], self.z0_select
        many = dataclasses.replace(cond, map=cond.map.repeat_interleave(k, 0), content=None, skip=None)
        draws = self._draw_z0_once(many, generator, labels.repeat_interleave(k)).unflatten(0, (n, k))
        labels = labels.to(draws.device)  # draws: (N*K, C_z, S, S) -> (N, K, C_z, S, S)
        chosen = self.z0_reader.choose(draws, labels.clamp_min(0))
        return torch.where((labels >= 0).view(-1, 1, 1, 1), chosen, draws[:, 0])

    def _draw_z0_once(
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
