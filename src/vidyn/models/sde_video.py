"""Neural-SDE video generator (`sde_video`): the latent SDE of Li et al., "Scalable Gradients for
Stochastic Differential Equations" (AISTATS 2020; torchsde's `examples/latent_sde_lorenz.py`) applied to
video, conditioned on initial frames and/or a class as in the conditional video models SVG (Denton &
Fergus, ICML 2018) and SRVP (Franceschi et al., ICML 2020). Seed 001 names the parts; this is vidyn's
reading of them.

Model. The latent z(t) is a feature map `(latent_channels, S, S)` (S = `latent_size`, e.g. 8 for 32 px
frames), as the ODE-ConvGRU latents of Vid-ODE, so the drifts are small conv nets and motion is local
transport in the map (`vidyn.nn.sde_nets`). A conv `MapEncoder` embeds every frame as an `(E, S, S)` map;
a ConvGRU run BACKWARDS in time over the embeddings (plus the gap to the next frame as a constant
channel) gives, at each observation i, a summary of frames i..T-1: its first output parametrises the
Gaussian posterior q(z0 | x) (a 1x1 conv), and output i+1 is the context of the posterior drift on
(t_i, t_{i+1}] (the reference's context). The latent follows
    posterior  dz = [h(z, c) + u(z, ctx_t)] dt + g(z) dW,      prior  dz = h(z, c) dt + g(z) dW,
with one bounded diagonal diffusion g shared by both (`vidyn.nn.sde`), integrated by torchsde with the
chosen `sde_type` / `method` (Kidger et al., "Efficient and Accurate Gradients for Neural SDEs", 2021,
for reversible Heun and the Stratonovich adjoint) to exactly the frame times. The condition c is a map:
[a forward ConvGRU over the context frames' embeddings (a learned null map without frames), the label
embedding broadcast over the map (index `num_classes` = the learned null label, written -1), the x/y
coordinates]; it sets the prior p(z0 | c) (Gaussian, from a conv net) and the prior drift. z(t) is
decoded by a `MapDecoder` into each frame.

Consistency module (seed 001 leaves it undefined; vidyn's interpretation, off with `consistency=False`):
1. a time-invariant content map, a 1x1 conv of the mean context-frame embedding (a learned null map
   without frames), is decoded with every z(t), so appearance need not be carried by the SDE;
2. a skip from the last context frame: the decoder outputs an image and a mask and the frame is
   `mask * last_context + (1 - mask) * image` (zeros stand for the absent frame unconditionally), so
   static background is copied rather than regenerated;
3. a re-encoding term: each decoded frame, encoded again (the same `MapEncoder` and a 1x1 conv head),
   should land on the latent it was decoded from: 0.5 * mean (head(enc(x_hat_t)) - sg(z_t))^2 / var_c,
   var_c the batch variance of sg(z) per channel (the latent's scale is free), summed over frames,
   weighted by `consistency_weight`. Frames must show the latent path, so a decoder cannot ignore the
   stochastic part of z (the "deterministic in disguise" failure) nor drift away from it.
   With `consistency=False` the decoder sees z(t) alone and the term is 0.

Training (`elbo`). The posterior observes the whole clip; the prior gets exactly what `sample` gets at
test time: the first `num_context` frames with their times and/or the labels, each dropped per clip with
probability `drop_condition` (the null condition), so one model serves unconditional, frame-, class- and
frame-and-class-conditional generation. Per clip, summed over frames (mean over the batch):
    nll     = -log N(x | x_hat, obs_std^2), summed over pixels: a Gaussian with fixed std `obs_std`
              (the reference's fixed noise_std), constants included, so it can be negative
              (`likelihood="laplace"`: a Laplace of the same std, i.e. an L1 reconstruction term;
              "gauss_laplace": both terms, `vidyn.nn.sde.GaussLaplace`);
    kl_z0   = KL(q(z0 | x) || p(z0 | c)), analytic;  kl_path = KL of the posterior path to the prior
              path (Girsanov; `sdeint(..., logqp=True)`), >= 0 in expectation;
    loss    = nll + kl_weight * (kl_z0 + kl_path) + consistency_weight * consistency
              (the path KL may carry its own weight, `kl_path_weight`: see the task's `kl_path_anneal`
              and `kl_path_early`).
`kl_weight` is the annealed beta of the reference (the task schedules it). `diffusion` = mean g along
the posterior path (detached), logged to catch the collapse g -> 0.

Sampling z0 (`z0_sampler: imle`). A Gaussian p(z0 | c) per cell offers a law's average motion, not one
coherent draw of it (docs/generation.md). With "imle", `sample` draws z0 from a sampler fitted beside the
ELBO to q(z0 | x) by conditional IMLE on detached inputs (`vidyn.nn.sde_prior.ImleSampler`); with
"imle_prompted" only samples with a class prompt do, the others from p(z0 | c), whose spread serves
best-of-N futures of unprompted frames better (docs/generation.md, sessions 22-23). `z0_select` K > 1: a
law reader chooses a prompted sample's z0 among K draws (`vidyn.models.sde_video_z0`).

Times. Clip and condition times are seconds; the SDE runs on times relative to the reference time
t_ref (the first context frame, else the first requested time), and the drifts are autonomous, so a
clip's law does not depend on its start time. torchsde integrates one time grid for the whole batch:
`(B, T)` times must have identical rows (else a VidynError says to call once per distinct grid).

Deviations from the reference example: images instead of vectors, and a latent map instead of a latent
vector (conv drifts; a first version with a 16-d vector latent and MLP drifts reconstructed no motion
within a CPU budget, see docs/generation.md); GRU inputs carry time gaps (irregular sampling); the
posterior drift is h + u (same function class, see `vidyn.nn.sde`); the diffusion has a floor
`min_diffusion`; the prior over z0 and the prior drift are conditional; the solve lands on each output
time instead of interpolating between steps.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vidyn.errors import VidynError
from vidyn.models.interface import Condition
from vidyn.models.sde_video_z0 import Z0Prior
from vidyn.nn.ode import ConvGRUCell
from vidyn.nn.sde import (
    LIKELIHOODS,
    ConditionMaps,
    LatentSDEFunc,
    check_condition_frames,
    check_frames,
    check_increasing,
    check_labels,
    check_sde_video_args,
    check_solver,
    reencoding_loss,
    shared_grid,
    solve,
)
from vidyn.nn.sde_nets import MapDecoder, MapEncoder, coordinates, latent_levels, run_conv_gru
from vidyn.registry import MODELS


class SDEVideo(Z0Prior, nn.Module):
    """Latent-SDE video generator; see the module docstring. `sample` is the Generator interface and
    `elbo` the training objective. `last_nfe`: drift and diffusion evaluations and solver steps of the
    last solve (see `vidyn.nn.sde.LatentSDEFunc`)."""

    continuous_time = True

    def __init__(
        self,
        *,
        in_channels: int,
        image_size: int,
        latent_size: int,
        latent_channels: int,
        hidden_channels: int,
        drift_channels: int,
        num_classes: int,
        base_channels: int,
        sde_type: str,
        method: str,
        dt: float,
        adjoint: bool,
        consistency: bool,
        consistency_weight: float,
        obs_std: float,
        min_diffusion: float,
        max_diffusion: float,
        z0_components: int = 1,
        likelihood: str = "gaussian",
        z0_sampler: str = "prior",
        z0_select: int = 1,
        z0_reader_fake: bool = False,
    ) -> None:
        super().__init__()
        sizes = dict(in_channels=in_channels, image_size=image_size, latent_size=latent_size)
        sizes |= dict(latent_channels=latent_channels, hidden_channels=hidden_channels)
        sizes |= dict(drift_channels=drift_channels, base_channels=base_channels)
        check_sde_video_args(sizes, num_classes, dt, obs_std, consistency_weight, likelihood)
        latent_levels(image_size, latent_size)
        check_solver(sde_type, method)
        self.in_channels, self.image_size, self.num_classes = in_channels, image_size, num_classes
        self.latent_size, self.sde_type, self.method = latent_size, sde_type, method
        self.dt, self.adjoint, self.obs_std = float(dt), bool(adjoint), float(obs_std)
        self.likelihood = likelihood
        self.consistency, self.consistency_weight = bool(consistency), float(consistency_weight)
        e, zc = hidden_channels, latent_channels

        self.encoder = MapEncoder(in_channels, image_size, latent_size, base_channels, e)
        self.posterior_rnn = ConvGRUCell(e + 1, e)
        self.to_posterior_z0 = nn.Conv2d(e, 2 * zc, 1)
        self.condition_rnn = ConvGRUCell(e + 1, e)
        self.null_frames = nn.Parameter(torch.zeros(e, latent_size, latent_size))
        self.label_embedding = nn.Embedding(num_classes + 1, e) if num_classes else None
        cond_channels = e * (2 if num_classes else 1) + 2  # frames, label, x/y
        self._build_prior_z0(
            cond_channels, e, zc, z0_components, z0_sampler, z0_select, num_classes, z0_reader_fake
        )
        self.sde = LatentSDEFunc(
            latent_channels=zc, latent_size=latent_size, cond_channels=cond_channels, context_channels=e,
            hidden_channels=drift_channels, sde_type=sde_type, min_diffusion=min_diffusion,
            max_diffusion=max_diffusion,
        )  # fmt: skip
        self._build_decoder(e, zc, base_channels)
        self.last_nfe = {"drift": 0, "diffusion": 0, "steps": 0}

    # -- training -----------------------------------------------------------------------------------
    def elbo(
        self,
        frames: Tensor,
        times: Tensor,
        *,
        num_context: int,
        labels: Tensor | None = None,
        kl_weight: float = 1.0,
        drop_condition: float = 0.0,
        generator: torch.Generator | None = None,
        kl_path_weight: float | None = None,
    ) -> dict[str, Tensor]:
        """Negative ELBO and its terms for clips `(B, T, C, H, W)` at `times` `(T,)` (or identical rows).

        The prior is conditioned on `frames[:, :num_context]` and `labels` `(B,)` (-1 = none), each
        dropped per clip with probability `drop_condition`. `kl_path_weight` weights the path KL (None =
        `kl_weight`, the ELBO's single beta). Returns scalars: loss (minimise), nll,
        kl_z0, kl_path, consistency (unweighted; 0 without the module), diffusion (mean g, detached),
        recon_mse (per-pixel MSE of the posterior reconstruction, detached: comparable across likelihoods),
        z0_sampler (the IMLE sampler's fit to the posterior, in the loss; 0 without it), z0_reader (the
        law reader's cross-entropy on the posterior's z0, in the loss; 0 without it).
        """
        check_frames(frames, self.in_channels, self.image_size, "frames")
        b, t = frames.shape[:2]
        rel = shared_grid(times, b, "times")
        check_increasing(rel, "times")
        rel = rel - rel[0]
        if not 0 <= num_context <= t or not 0 <= drop_condition <= 1:
            raise VidynError(f"need 0 <= num_context <= {t} and 0 <= drop_condition <= 1")
        true_labels = check_labels(labels, b, self.num_classes, frames.device)
        out, q_z0, z0, cond = self._encode_clips(
            frames, rel, num_context, true_labels, drop_condition, generator
        )
        kl_z0 = self._kl_z0(q_z0, z0, cond)

        zs, kl_path = self._solve(z0.flatten(1), cond.map, rel.tolist(), generator, out.transpose(0, 1))
        assert kl_path is not None
        recon = self._decode(zs, cond)  # (B, T, C, H, W)
        pixel = LIKELIHOODS[self.likelihood](recon, self.obs_std)
        nll = -pixel.log_prob(frames).sum((1, 2, 3, 4)).mean()
        consistency = self._consistency(recon, zs)
        kl = kl_weight * kl_z0 + (kl_weight if kl_path_weight is None else kl_path_weight) * kl_path.mean()
        fit, reader = self._fit_z0(cond.map, q_z0.mean, q_z0.stddev, z0, true_labels, generator)  # ex post
        loss = nll + kl + self.consistency_weight * consistency + fit + reader
        diffusion = self.sde.diffusion(self._maps(zs).flatten(0, 1)).mean().detach()  # mean g on the path
        recon_mse = (recon - frames).square().mean().detach()
        return dict(loss=loss, nll=nll, kl_z0=kl_z0, kl_path=kl_path.mean(), consistency=consistency,
                    diffusion=diffusion, recon_mse=recon_mse, z0_sampler=fit, z0_reader=reader)  # fmt: skip

    def _consistency(self, recon: Tensor, zs: Tensor) -> Tensor:
        """The re-encoding term of the decoded frames `(B, T, C, H, W)` (0 without the consistency module)."""
        if not self.consistency:
            return recon.new_zeros(())
        return reencoding_loss(self.encoder, self.reencode, recon, self._maps(zs))

    # -- generation ---------------------------------------------------------------------------------
    def sample(
        self,
        num_samples: int,
        times: Tensor,
        *,
        condition: Condition | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """`(num_samples, T, C, H, W)` in [0, 1] at `times` `(T,)` (any order; identical rows if batched).

        With condition frames the latent starts at the first condition time (requested times must not
        precede it) from the prior given the context encoding; the SDE runs under the prior drift to
        each requested time. The same `generator` state gives the same samples.
        """
        if not isinstance(num_samples, int) or num_samples < 1:
            raise VidynError(f"num_samples must be a positive integer; got {num_samples!r}")
        n = num_samples
        out_t = shared_grid(times, n, "times")
        condition = condition or Condition()
        ctx, t_ref = None, float(out_t.min())
        if condition.frames is not None:
            frames, ctx_t = check_condition_frames(
                condition.frames, condition.times, n, self.in_channels, self.image_size
            )
            frames = frames.to(self.null_frames)
            t_ref = float(ctx_t[0])
            if bool((out_t < t_ref).any()):
                raise VidynError("times must not precede the first condition frame; drop earlier times")
            emb = self.encoder(frames.flatten(0, 1)).unflatten(0, frames.shape[:2])  # (N, T_c, E, S, S)
            ctx = (frames, emb, ctx_t - t_ref)
        labels = check_labels(condition.labels, n, self.num_classes, self.null_frames.device)
        cond = self._encode_condition(ctx, labels, n)
        z0 = self._draw_z0(cond, generator, labels)
        grid, where = torch.unique(torch.cat([out_t.new_tensor([t_ref]), out_t]), return_inverse=True)
        rel = (grid - t_ref).tolist()
        zs, _ = self._solve(z0.flatten(1), cond.map, rel, generator)  # (K, N, d) on the sorted grid
        return self._decode(zs[where[1:].to(zs.device)], cond)  # (N, T, C, H, W)

    # -- shared pieces ------------------------------------------------------------------------------
    def _encode_condition(
        self,
        ctx: tuple[Tensor, Tensor, Tensor] | None,
        labels: Tensor | None,
        n: int,
        keep_frames: Tensor | None = None,
    ) -> ConditionMaps:
        """ctx = (frames `(N, T_c, C, H, W)`, embeddings `(N, T_c, E, S, S)`, times from t_ref `(T_c,)`)."""
        frames_map = self.null_frames.expand(n, -1, -1, -1)  # (N, E, S, S)
        content = self.null_content.expand(n, -1, -1, -1) if self.consistency else None
        skip = None
        if self.consistency:
            skip = frames_map.new_zeros(n, self.in_channels, self.image_size, self.image_size)
        if ctx is not None:
            frames, emb, rel = ctx
            gaps = torch.cat([rel.new_zeros(1), rel.diff()])  # (T_c,) gap from the previous frame
            keep = torch.ones(n, dtype=torch.bool, device=emb.device) if keep_frames is None else keep_frames
            keep = keep.view(n, 1, 1, 1)  # (N,) -> (N, 1, 1, 1)
            final = run_conv_gru(self.condition_rnn, emb, gaps, backwards=False)[:, -1]  # (N, E, S, S)
            frames_map = torch.where(keep, final, frames_map)
            if self.consistency:
                content = torch.where(keep, self.to_content(emb.mean(1)), content)
                skip = torch.where(keep, frames[:, -1], skip)
        parts = [frames_map]
        if self.label_embedding is not None:
            idx = torch.full((n,), -1, device=frames_map.device) if labels is None else labels
            idx = torch.where(idx < 0, self.num_classes, idx)  # -1 -> the learned null label
            s = self.latent_size
            parts.append(self.label_embedding(idx)[:, :, None, None].expand(-1, -1, s, s))  # (N, E, S, S)
        parts.append(coordinates(self.latent_size, frames_map).expand(n, -1, -1, -1))
        return ConditionMaps(torch.cat(parts, dim=1), content, skip)

    def _build_decoder(self, hidden: int, zc: int, base_channels: int) -> None:
        """The frame decoder of z(t) (`decoder`); with consistency it also takes the content map and outputs
        the skip mask, and the content map's 1x1 conv and null map and the re-encoding head are built."""
        e, s = hidden, self.latent_size
        if self.consistency:
            self.to_content = nn.Conv2d(e, e, 1)
            self.null_content = nn.Parameter(torch.zeros(e, s, s))
            self.reencode = nn.Conv2d(e, zc, 1)
        decoder_in = zc + (e if self.consistency else 0)
        decoder_out = self.in_channels + (1 if self.consistency else 0)  # image (+ skip mask)
        self.decoder = MapDecoder(decoder_in, decoder_out, self.image_size, s, base_channels)

    def _solve(
        self,
        z0: Tensor,
        cond: Tensor,
        rel: list[float],
        generator: torch.Generator | None,
        contexts: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        self.sde.nfe = {"drift": 0, "diffusion": 0, "steps": 0}
        opts = dict(method=self.method, dt=self.dt, adjoint=self.adjoint, generator=generator)
        result = solve(self.sde, z0, rel, cond=cond, contexts=contexts, **opts)
        self.last_nfe = dict(self.sde.nfe)
        return result

    def _maps(self, zs: Tensor) -> Tensor:
        return zs.view(*zs.shape[:2], *self.sde.shape)  # (K, N, d) -> (K, N, C_z, S, S)

    def _decode(self, zs: Tensor, cond: ConditionMaps) -> Tensor:
        """Flat latents `(K, N, d)` -> frames `(N, K, C, H, W)` in [0, 1]."""
        k, n = zs.shape[:2]
        inp = self._maps(zs)
        if cond.content is not None:
            inp = torch.cat([inp, cond.content.expand(k, -1, -1, -1, -1)], dim=2)  # (K, N, C_z + E, S, S)
        out = self.decoder(inp.flatten(0, 1)).unflatten(0, (k, n)).transpose(0, 1)  # (N, K, C', H, W)
        image = torch.sigmoid(out[:, :, : self.in_channels])
        if cond.skip is None:
            return image
        mask = torch.sigmoid(out[:, :, self.in_channels :])  # (N, K, 1, H, W)
        return mask * cond.skip.unsqueeze(1) + (1 - mask) * image


@MODELS.register("sde_video", family="generator")
def sde_video(
    in_channels: int = 3,
    image_size: int = 64,
    latent_size: int = 8,
    latent_channels: int = 16,
    hidden_channels: int = 64,
    drift_channels: int = 64,
    num_classes: int = 0,
    base_channels: int = 32,
    sde_type: str = "ito",
    method: str = "euler",
    dt: float = 0.025,
    adjoint: bool = False,
    consistency: bool = True,
    consistency_weight: float = 100.0,
    obs_std: float = 0.05,
    min_diffusion: float = 0.01,
    max_diffusion: float = 0.2,
    z0_components: int = 1,
    likelihood: str = "gaussian",
    z0_sampler: str = "prior",
    z0_select: int = 1,
    z0_reader_fake: bool = False,
) -> SDEVideo:
    """Latent-SDE video generator (Li et al. 2020) conditioned on initial frames and/or a class.

    The latent is a `latent_channels` x `latent_size`^2 map (`image_size / latent_size` a power of two);
    `hidden_channels` is the width of the frame embeddings, GRUs and condition, `drift_channels` of the
    drift nets. `sde_type` "ito" (methods euler, milstein, srk) or "stratonovich" (midpoint, heun,
    milstein, reversible_heun); steps of at most `dt` seconds; `adjoint` backpropagates with torchsde's
    adjoint. `num_classes` 0 = no class prompt. `consistency` switches vidyn's consistency module
    (content map, last-frame skip, re-encoding term weighted by `consistency_weight`); `obs_std` is the
    fixed pixel scale of the `likelihood` ("gaussian", "laplace", "gauss_laplace"); the diagonal
    diffusion lies in [min_diffusion, max_diffusion]. `z0_components` > 1 makes the prior over z0 a
    mixture with one component drawn per clip (`vidyn.nn.sde_prior`; 1 = a Gaussian per latent cell).
    `z0_sampler` "imle": samples start from a conditional-IMLE sampler of the posterior's z0 (fitted beside
    the ELBO, `vidyn.nn.sde_prior.ImleSampler`) instead of p(z0 | c) ("prior"); "imle_prompted": only
    samples with a class prompt do. `z0_select` K > 1: a law reader fitted beside the ELBO chooses a
    prompted sample's z0 among K draws (`vidyn.nn.sde_prior.LawReader`); `z0_reader_fake`: the reader also
    learns the sampler's draws as a class of their own, so it passes over draws off the posterior's.
    """
    return SDEVideo(**locals())  # the builder's arguments are the constructor's, by name


MODELS.variant(
    "sde_video_tiny",
    of="sde_video",
    description="Tiny sde_video for tests: 16x16 grayscale, a 2x4x4 latent map, 8 channels, dt 0.05.",
    in_channels=1,
    image_size=16,
    latent_size=4,
    latent_channels=2,
    hidden_channels=8,
    drift_channels=8,
    base_channels=4,
    dt=0.05,
)
