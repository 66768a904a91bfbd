"""Discriminators and GAN-loss helpers for video generation (the generation task's side of `ode_gan`).

- `VideoDiscriminator`: a 3D-CNN clip discriminator (seed 000; MoCoGAN's D_V, Tulyakov et al., CVPR 2018)
  that is also given the time gaps between the frames it sees, as StyleGAN-V (Skorokhodov et al., CVPR
  2022) and DIGAN (Yu et al., ICLR 2022) do, so it judges motion at any frame rate and irregular
  sampling: each frame gets two constant input channels, the gaps to its previous and next frame in
  units of `time_unit` seconds (0 where there is none).
- `FrameDiscriminator`: MoCoGAN's image discriminator D_I on single frames (`sample_frames` picks them).
- Both are optionally class-conditional by projection (Miyato & Koyama, "cGANs with Projection
  Discriminator", ICLR 2018): `logit = linear(phi) + <embed(y), phi>`, where the null label -1 adds no
  projection term, so one discriminator scores conditional and unconditional samples. Spectral norm
  (Miyato et al., ICLR 2018) is optional; no normalisation layers, so R1 and per-sample scores are clean.
- `minibatch_std` (optional, both): the pooled features' standard deviation over the batch, averaged
  over features, appended as one more feature (ProGAN's minibatch standard deviation, Karras et al.,
  ICLR 2018, on pooled features): a batch of near-identical samples is told apart from a real batch,
  the standard remedy for a generator that collapses onto one appearance. `class_std` (optional, both):
  the same statistic over the batch's clips of the row's own class (a clip alone in its class reads 0;
  real and generated batches carry the same labels, so the feature is fair to both): a batch that mixes
  classes has a large spread even when each class is one look-alike clip, which the batch-wide
  statistic cannot see (vidyn's per-class variant). `spatial_std` (with `minibatch_std`): the batch
  statistic is taken, as ProGAN takes it, on the last feature map before pooling, per feature, frame and
  position, then averaged: the pooled features are nearly translation-invariant, so on them a batch whose
  objects all sit at one place reads like one whose objects are spread over the frame; on the map it
  does not.
- Losses: BCE with one-sided label smoothing (real target 0.9, the seed; Salimans et al. 2016), the
  non-saturating generator loss, the R1 penalty on real inputs (Mescheder et al., ICML 2018), instance
  noise with a linearly annealed std (Sønderby et al. 2017), dropping labels to the null label, and an
  exponential moving average of the generator (`torch.optim.swa_utils.AveragedModel`; Karras et al.).

Deviations: MoCoGAN uses BatchNorm and 4x4x4 kernels; here 3x4x4 kernels with temporal stride 1 and
"same" padding accept clips of any length, and scores are averaged over time and space, so clips of
different lengths and rates share one discriminator.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from vidyn.errors import VidynError


def _widths(image_size: int, base_channels: int, max_channels: int) -> list[int]:
    num_down = round(math.log2(image_size / 4))
    if image_size != 4 * 2**num_down or num_down < 1:
        raise VidynError(f"image_size must be 4 * 2**k with k >= 1 (8, 16, 32, 64, ...); got {image_size}")
    return [min(max_channels, base_channels * 2**i) for i in range(num_down)]


class _Projection(nn.Module):
    """`logit = linear(phi) + <embed(y), phi>`; rows with y = -1 (or no labels) get no projection term."""

    def __init__(self, features: int, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.linear = nn.Linear(features, 1)
        self.embedding = nn.Embedding(num_classes, features) if num_classes else None

    def forward(self, phi: Tensor, labels: Tensor | None) -> Tensor:
        logit = self.linear(phi).squeeze(1)  # (N, 1) -> (N,)
        if labels is None or self.embedding is None:
            if labels is not None and bool((labels != -1).any()):
                raise VidynError(
                    "this discriminator is unconditional (num_classes=0); pass labels None or -1"
                )
            return logit
        if labels.shape != (phi.shape[0],) or labels.dtype.is_floating_point:
            raise VidynError(f"labels must be int64 of shape ({phi.shape[0]},); got {tuple(labels.shape)}")
        if bool(((labels < -1) | (labels >= self.num_classes)).any()):
            raise VidynError(f"labels must be in 0..{self.num_classes - 1} or -1; got {labels.tolist()}")
        known = labels >= 0
        emb = self.embedding(labels.clamp_min(0))  # (N, F); the null rows are masked out below
        return logit + known * (emb * phi).sum(dim=1)


def _apply_spectral_norm(module: nn.Module) -> None:
    for m in list(module.modules()):
        if isinstance(m, nn.Conv2d | nn.Conv3d | nn.Linear | nn.Embedding):
            nn.utils.parametrizations.spectral_norm(m)


def time_gaps(times: Tensor, batch_size: int, num_frames: int) -> Tensor:
    """Gaps in seconds to the previous and next frame, `(B, 2, T)`, 0 where there is none."""
    if times.dim() == 1:
        times = times.unsqueeze(0).expand(batch_size, -1)  # (T,) -> (B, T)
    if times.shape != (batch_size, num_frames):
        raise VidynError(
            f"times must be ({num_frames},) or ({batch_size}, {num_frames}); got {tuple(times.shape)}"
        )
    gaps = times.to(torch.float32).diff(dim=1)  # (B, T-1)
    zero = gaps.new_zeros(batch_size, 1)
    return torch.stack([torch.cat([zero, gaps], 1), torch.cat([gaps, zero], 1)], dim=1)  # (B, 2, T)


def clip_input(clips: Tensor, times: Tensor, time_unit: float, *, frame_differences: bool) -> Tensor:
    """`(B, T, C, H, W)` clips -> `(B, C [+ C] + 2, T, H, W)` conv input: the frames, their differences from
    the previous frame (zero for the first) with `frame_differences`, and the gaps to the previous and
    next frame in units of `time_unit` as two constant channels."""
    b, t, _, h, w = clips.shape
    gaps = time_gaps(times.to(clips.device), b, t) / time_unit  # (B, 2, T)
    parts = [clips.transpose(1, 2)]  # (B, C, T, H, W)
    if frame_differences:
        diff = torch.cat([torch.zeros_like(clips[:, :1]), clips.diff(dim=1)], dim=1)  # (B, T, C, H, W)
        parts.append(diff.transpose(1, 2))
    return torch.cat([*parts, gaps[..., None, None].expand(b, 2, t, h, w)], dim=1)


def stack_layout(x: Tensor, *, normalised: bool = False) -> Tensor:
    """The memory layout a 3D conv stack's input `(B, C, T, H, W)` runs in: channels-last-3d on CPU, where
    oneDNN's 3D convolutions are faster in it (docs/speed.md, session 21), except for stacks with
    GroupNorm (`normalised`), which is slower there. Other devices keep the default layout (not
    measured)."""
    if x.device.type != "cpu" or normalised:
        return x
    return x.contiguous(memory_format=torch.channels_last_3d)


def minibatch_std(phi: Tensor) -> Tensor:
    """Features `(N, F)` -> `(N, F + 1)`: the last column is the standard deviation of each feature over
    the N rows, averaged over the features (the same for every row)."""
    return torch.cat([phi, spatial_std(phi)], dim=1)


def spatial_std(maps: Tensor) -> Tensor:
    """Features `(N, F, *positions)` (none for pooled features) -> `(N, 1)`: the standard deviation over
    the N rows at each feature and position, averaged (ProGAN's minibatch standard deviation; the same for
    every row)."""
    std = maps.float().var(0, correction=0).add(1e-8).sqrt().mean().to(maps.dtype)
    return std.expand(maps.shape[0], 1)


def class_std(phi: Tensor, labels: Tensor | None) -> Tensor:
    """Features `(N, F)` -> `(N, F + 1)`: the last column is, for each row, the standard deviation of each
    feature over the rows of its label (itself included; 0 for a row alone in its class), averaged over
    the features. Without labels, over all rows (`minibatch_std`)."""
    if labels is None:
        return minibatch_std(phi)
    return torch.cat([phi, _class_std_column(phi, labels)], dim=1)


def _class_std_column(phi: Tensor, labels: Tensor) -> Tensor:
    """`class_std`'s column `(N, 1)`."""
    x = phi.float()
    same = (labels[:, None] == labels[None, :]).float()  # (N, N)
    count = same.sum(1, keepdim=True)
    mean, mean_sq = same @ x / count, same @ x.square() / count  # (N, F) per-class moments of each row
    std = (mean_sq - mean.square()).clamp_min(0).add(1e-8).sqrt().mean(1, keepdim=True)
    return std.to(phi.dtype)


def _batch_features(
    phi: Tensor, labels: Tensor | None, *, batch: bool, per_class: bool, maps: Tensor | None = None
) -> Tensor:
    """`phi` with the minibatch-std column (from the unpooled `maps` when given) and/or the per-class one
    appended (in that order)."""
    out = torch.cat([phi, spatial_std(phi if maps is None else maps)], dim=1) if batch else phi
    if not per_class:
        return out
    column = spatial_std(phi) if labels is None else _class_std_column(phi, labels)
    return torch.cat([out, column], dim=1)


def _check_spatial(minibatch_std: bool, spatial_std: bool) -> bool:
    if spatial_std and not minibatch_std:
        raise VidynError("spatial_std is where the minibatch std is taken: set minibatch_std=True")
    return bool(spatial_std)


def _conv_stack(cin: int, widths: list[int]) -> nn.Sequential:
    """3x4x4 convs, temporal stride 1 and "same", spatial stride 2, each followed by LeakyReLU 0.2."""
    layers: list[nn.Module] = []
    for cout in widths:
        layers += [nn.Conv3d(cin, cout, (3, 4, 4), (1, 2, 2), (1, 1, 1)), nn.LeakyReLU(0.2)]
        cin = cout
    return nn.Sequential(*layers)


class VideoDiscriminator(nn.Module):
    """3D-CNN clip discriminator: `forward(clips (B, T, C, H, W), times (T,)|(B, T), labels=None) -> (B,)`
    logits. Each layer is a 3x4x4 conv (temporal stride 1, spatial stride 2) and LeakyReLU 0.2, down to
    4x4; features are averaged over time and space, then scored by the projection head.

    `frame_differences`: also give it each frame's difference from the previous one (zero for the first)
    as input channels, a motion stream as in two-stream video discriminators: a clip that does not move
    is then told apart from real ones in the first layer, and the generator is pushed to move instead of
    only to look right frame by frame (the failure of small video GANs: realistic stills).

    `aux_classifier`: also a linear classifier of the clip's class from the same features (AC-GAN, Odena
    et al., ICML 2017), read with `forward(..., with_classes=True) -> (logits, class_logits (B, K))`."""

    def __init__(
        self,
        *,
        in_channels: int = 3,
        image_size: int = 64,
        base_channels: int = 64,
        max_channels: int = 512,
        num_classes: int = 0,
        spectral_norm: bool = False,
        time_unit: float = 0.1,
        frame_differences: bool = False,
        aux_classifier: bool = False,
        minibatch_std: bool = False,
        class_std: bool = False,
        spatial_std: bool = False,
    ) -> None:
        super().__init__()
        if not time_unit > 0:
            raise VidynError(f"time_unit must be > 0 seconds; got {time_unit}")
        self.in_channels, self.image_size, self.num_classes = in_channels, image_size, num_classes
        self.time_unit = float(time_unit)
        self.frame_differences = frame_differences
        widths = _widths(image_size, base_channels, max_channels)
        # frames (+ their differences) + the gap to the previous and to the next frame
        self.net = _conv_stack(in_channels * (2 if frame_differences else 1) + 2, widths)
        cin, self.minibatch_std, self.class_std = widths[-1], bool(minibatch_std), bool(class_std)
        self.spatial_std = _check_spatial(minibatch_std, spatial_std)
        self.head = _Projection(cin + self.minibatch_std + self.class_std, num_classes)
        if aux_classifier and num_classes < 2:
            raise VidynError(
                f"aux_classifier needs a class-conditional model (num_classes >= 2); got {num_classes}"
            )
        self.classifier = nn.Linear(cin, num_classes) if aux_classifier else None
        if spectral_norm:
            _apply_spectral_norm(self)

    def forward(
        self, clips: Tensor, times: Tensor, labels: Tensor | None = None, *, with_classes: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        if clips.dim() != 5 or clips.shape[2] != self.in_channels:
            raise VidynError(f"clips must be (B, T, {self.in_channels}, H, W); got {tuple(clips.shape)}")
        x = clip_input(clips, times, self.time_unit, frame_differences=self.frame_differences)
        maps = self.net(stack_layout(x))  # (B, C', T, H, W) -> (B, F, T, 4, 4)
        phi = maps.mean(dim=(2, 3, 4))  # (B, F)
        features = _batch_features(phi, labels, batch=self.minibatch_std, per_class=self.class_std,
                                   maps=maps if self.spatial_std else None)  # fmt: skip
        logits = self.head(features, labels)
        if not with_classes:
            return logits
        if self.classifier is None:
            raise VidynError("this discriminator has no class head; build it with aux_classifier=True")
        return logits, self.classifier(phi)


class FrameDiscriminator(nn.Module):
    """MoCoGAN's image discriminator: `forward(frames (N, C, H, W), labels=None) -> (N,)` logits; 4x4
    stride-2 convs and LeakyReLU 0.2 down to 4x4, average pooling, projection head."""

    def __init__(
        self,
        *,
        in_channels: int = 3,
        image_size: int = 64,
        base_channels: int = 64,
        max_channels: int = 512,
        num_classes: int = 0,
        spectral_norm: bool = False,
        minibatch_std: bool = False,
        class_std: bool = False,
        spatial_std: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels, self.image_size, self.num_classes = in_channels, image_size, num_classes
        self.minibatch_std, self.class_std = bool(minibatch_std), bool(class_std)
        self.spatial_std = _check_spatial(minibatch_std, spatial_std)
        layers: list[nn.Module] = []
        cin = in_channels
        for cout in _widths(image_size, base_channels, max_channels):
            layers += [nn.Conv2d(cin, cout, 4, 2, 1), nn.LeakyReLU(0.2)]
            cin = cout
        self.net = nn.Sequential(*layers)
        self.head = _Projection(cin + self.minibatch_std + self.class_std, num_classes)
        if spectral_norm:
            _apply_spectral_norm(self)

    def forward(self, frames: Tensor, labels: Tensor | None = None) -> Tensor:
        if frames.dim() != 4 or frames.shape[1] != self.in_channels:
            raise VidynError(f"frames must be (N, {self.in_channels}, H, W); got {tuple(frames.shape)}")
        maps = self.net(frames)  # (N, F, 4, 4)
        phi = maps.mean(dim=(2, 3))  # (N, F)
        features = _batch_features(phi, labels, batch=self.minibatch_std, per_class=self.class_std,
                                   maps=maps if self.spatial_std else None)  # fmt: skip
        return self.head(features, labels)  # (N,)


def sample_frames(
    clips: Tensor,
    labels: Tensor | None = None,
    *,
    frames_per_clip: int = 1,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Random frames of each clip for the frame discriminator: `(B, T, C, H, W) -> (B*k, C, H, W)`, with
    the labels repeated to `(B*k,)` (frames of clip i come first, then clip i+1, ...)."""
    b, t = clips.shape[:2]
    pick = torch.randint(t, (b, frames_per_clip), generator=generator).to(clips.device)  # (B, k)
    rows = torch.arange(b, device=clips.device).unsqueeze(1)  # (B, 1) broadcasts against pick
    frames = clips[rows, pick].flatten(0, 1)  # (B, k, C, H, W) -> (B*k, C, H, W)
    if labels is not None:
        labels = labels.repeat_interleave(frames_per_clip)
    return frames, labels


def bce_d_loss(real_logits: Tensor, fake_logits: Tensor, *, real_target: float = 0.9) -> Tensor:
    """Discriminator BCE with one-sided label smoothing: real targets `real_target`, fake targets 0."""
    real = F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, real_target))
    return real + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))


def bce_g_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating generator loss: BCE of the fakes' logits against target 1 (never smoothed)."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def mode_seeking_loss(fake: Tensor, z: Tensor, labels: Tensor | None, *, eps: float = 1e-5) -> Tensor | None:
    """MSGAN's mode-seeking term (Mao et al., CVPR 2019) over the batch's pairs asked for the same class.

    For clips `fake` `(B, ...)` generated from noise `z` `(B, D)`: the mean over pairs (i, j) of
    `1 / (mean|G(z_i) - G(z_j)| / mean|z_i - z_j| + eps)`, which the generator minimises to make different
    noise give different clips. MSGAN draws a second batch with the same conditions; here the pairs are the
    ones the batch already holds (labels equal, the null label -1 included; every pair without labels), so
    it costs no extra generator pass. None where no two clips share a label.
    """
    b = fake.shape[0]
    i, j = torch.triu_indices(b, b, offset=1, device=fake.device)
    if labels is not None:
        keep = labels[i] == labels[j]
        i, j = i[keep], j[keep]
    if i.numel() == 0:
        return None
    flat = fake.flatten(1).float()  # (B, T*C*H*W)
    ratio = (flat[i] - flat[j]).abs().mean(1) / (z[i] - z[j]).abs().flatten(1).float().mean(1)
    return (1.0 / (ratio + eps)).mean()


def r1_penalty(real_logits: Tensor, real_inputs: Tensor, *, gamma: float = 1.0) -> Tensor:
    """`gamma / 2 * E ||grad_x D(x)||^2` over real inputs (which must require grad before D saw them).

    Built with `create_graph=True`, so it can be added to the discriminator loss and backpropagated.
    """
    if not real_inputs.requires_grad:
        raise ValueError("call real_inputs.requires_grad_(True) before the discriminator sees them")
    if not real_logits.requires_grad:  # D does not depend on anything that requires grad
        return real_logits.new_zeros(())
    (grad,) = torch.autograd.grad(real_logits.sum(), real_inputs, create_graph=True, allow_unused=True)
    if grad is None:  # D does not depend on its input
        return real_logits.new_zeros(())
    return 0.5 * gamma * grad.square().flatten(1).sum(dim=1).mean()


def instance_noise_std(step: int, *, start: float, anneal_steps: int, end: float = 0.0) -> float:
    """Instance-noise std at `step`: linear from `start` to `end` over `anneal_steps`, then `end`."""
    if anneal_steps <= 0:
        return end
    return start + (end - start) * min(max(step, 0), anneal_steps) / anneal_steps


def add_instance_noise(x: Tensor, std: float, generator: torch.Generator | None = None) -> Tensor:
    """`x + std * N(0, I)`; apply it to real and fake inputs alike (with `std` from `instance_noise_std`)."""
    if std <= 0:
        return x
    noise = torch.randn(
        x.shape, generator=generator, dtype=x.dtype, device=generator.device if generator else x.device
    )
    return x + std * noise.to(x.device)


def drop_labels(labels: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """Replace each label by the null label -1 with probability `p` (so one model also samples
    unconditionally)."""
    if p <= 0:
        return labels
    drop = torch.rand(labels.shape, generator=generator) < p
    return torch.where(drop.to(labels.device), torch.full_like(labels, -1), labels)


def ema_model(model: nn.Module, decay: float = 0.999) -> AveragedModel:
    """An exponential moving average of `model` (parameters and buffers) for sampling.

    Call `ema.update_parameters(model)` after every generator step: the first call copies the weights,
    each later one sets `ema = decay * ema + (1 - decay) * model`. The averaged copy is `ema.module` (it
    keeps the model's `vidyn_spec`, so it can be exported as the generator).
    """
    if not 0.0 <= decay < 1.0:
        raise VidynError(f"EMA decay must be in [0, 1); got {decay}")
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
