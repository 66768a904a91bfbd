"""A classifier of a clip's motion class, trained on real clips and read on generated ones: the generation
tasks' separate AC-GAN classifier (`gan`'s `aux_classifier: separate`, Odena et al., ICML 2017) and
`latent_sde`'s class-consistency term. `forward(clips (B, T, C, H, W), times (T,)|(B, T)) -> (B, K)` logits.

Three readers, one input: frames, frame differences and time gaps (`clip_input`).

- `gru`: the video discriminator's 3D conv stack; each time step's 4x4 map, reduced to 8 channels,
  flattened and layer-normalised, is read by a GRU.
- `mlp`: the same conv stack with each conv's channels normalised per clip over space and time (instance
  norm: `GroupNorm` with one channel per group, Ulyanov et al. 2016), and all time steps' features,
  resampled to `length` steps, read together by an MLP.
- `trajectory`: the clip as tracks of spatial moments. Each frame gives probability maps over its pixels:
  its intensity and its absolute difference from the previous frame (normalised to sum 1; no parameters),
  plus `keypoints` learned maps (a small 2D conv net on frame and difference, spatial softmax, as in the
  keypoint bottlenecks of Finn et al., ICRA 2016 and Jakab et al., NeurIPS 2018). Each map is summarised
  by its mean position and its second moments (x, y, var x, var y, cov xy: where the object is, its size
  and orientation), and each moment by its rate of change over the time gap. The tracks are scaled to
  unit spread by their standard deviation on the first training batch (data-dependent initialisation,
  Krähenbühl et al., ICLR 2016), the learned keypoints enter through a gate initialised at 0 (ReZero,
  Bachlechner et al. 2020), and an MLP reads the tracks resampled to `length` steps.

Why three: a class term is only as good as its classifier, and the `gru` reader sits at chance on `shapes`
for hundreds of steps before it learns, a point that varies by seed. Its features are dominated by what
every clip shares (a black background, the constant time-gap channels, the biases): one small moving
object is a small change in them, which layer norm over a time step's features does not undo. Normalising
each channel per clip removes the shared part, and the `mlp` reader learns early and reliably. The
`trajectory` reader learns earlier still but is the wrong teacher: generators trained against it move
their samples' moments, not their objects. An early learner is not a better teacher in general: measured
in docs/generation.md ("Session 11: a motion classifier that learns early",
`benchmarks/probe_motion_classifier.py`); the task defaults keep `gru`.

Batch independence: every reader scores each clip on its own (no batch norm), so generated clips are read
as they are, not relative to the batch they come in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidyn.errors import VidynError
from vidyn.models.video_discriminators import _conv_stack, _widths, clip_input, stack_layout, time_gaps

READERS = ("gru", "mlp", "trajectory")
_MOMENTS = 5  # mean x, mean y, var x, var y, cov xy


def map_moments(prob: Tensor) -> Tensor:
    """Probability maps `(N, K, H, W)` (each summing to 1) -> `(N, K, 5)`: mean x, mean y, var x, var y and
    cov xy of pixel position, with x and y in [-1, 1] across the image."""
    h, w = prob.shape[-2:]
    ys = torch.linspace(-1, 1, h, device=prob.device, dtype=prob.dtype)
    xs = torch.linspace(-1, 1, w, device=prob.device, dtype=prob.dtype)
    px, py = prob.sum(2), prob.sum(3)  # marginals (N, K, W), (N, K, H)
    mx, my = px @ xs, py @ ys  # (N, K)
    var_x, var_y = px @ xs.square() - mx.square(), py @ ys.square() - my.square()
    cov = (prob * ys[:, None] * xs[None, :]).sum((2, 3)) - mx * my
    return torch.stack([mx, my, var_x, var_y, cov], dim=2)


class _ConvSteps(nn.Module):
    """The conv stack on frames, differences and gaps -> per time step features `(B, T, 128)`: each step's
    4x4 map reduced to 8 channels, flattened and layer-normalised. `instance_norm` after each conv."""

    def __init__(self, in_channels: int, widths: list[int], *, instance_norm: bool):
        super().__init__()
        layers: list[nn.Module] = []
        for layer in _conv_stack(2 * in_channels + 2, widths):
            layers.append(layer)
            if instance_norm and isinstance(layer, nn.Conv3d):  # GroupNorm with one channel per group
                layers.append(nn.GroupNorm(layer.out_channels, layer.out_channels))
        self.net = nn.Sequential(*layers)
        self.instance_norm = instance_norm
        self.reduce = nn.Conv3d(widths[-1], 8, 1)
        # Without normalisation the conv features grew (std 34 in one GAN run) and saturated the GRU's gates:
        # gradients of 1e-5 and a cross-entropy stuck at chance for 1,700 steps (docs/generation.md).
        self.norm = nn.LayerNorm(8 * 16)

    def steps(self, clips: Tensor, times: Tensor, time_unit: float) -> Tensor:
        x = clip_input(clips, times, time_unit, frame_differences=True)
        x = self.reduce(self.net(stack_layout(x, normalised=self.instance_norm)))
        b, c, t = x.shape[:3]
        return self.norm(
            x.permute(0, 2, 1, 3, 4).reshape(b, t, c * 16).float()
        )  # (B, 8, T, 4, 4) -> (B, T, 128)


class _GruReader(_ConvSteps):
    def __init__(self, in_channels: int, num_classes: int, widths: list[int], hidden: int):
        super().__init__(in_channels, widths, instance_norm=False)
        self.gru = nn.GRU(8 * 16, hidden, batch_first=True)
        self.out = nn.Linear(hidden, num_classes)

    def forward(self, clips: Tensor, times: Tensor, time_unit: float) -> Tensor:
        _, last = self.gru(self.steps(clips, times, time_unit))  # (1, B, hidden)
        return self.out(last[0])


class _MlpReader(_ConvSteps):
    def __init__(self, in_channels: int, num_classes: int, widths: list[int], hidden: int, length: int):
        super().__init__(in_channels, widths, instance_norm=True)
        self.length = length
        self.mlp = nn.Sequential(
            nn.Linear(8 * 16 * length, 2 * hidden), nn.GELU(), nn.Linear(2 * hidden, num_classes)
        )

    def forward(self, clips: Tensor, times: Tensor, time_unit: float) -> Tensor:
        seq = self.steps(clips, times, time_unit).transpose(1, 2)  # (B, 128, T)
        if seq.shape[2] != self.length:
            seq = F.adaptive_avg_pool1d(seq, self.length)  # any clip length -> (B, 128, length)
        return self.mlp(seq.flatten(1))


class _TrajectoryReader(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, hidden: int, keypoints: int, length: int):
        super().__init__()
        self.keypoints, self.length = keypoints, length
        width = 16
        self.keypoint_net = (
            nn.Sequential(
                nn.Conv2d(2 * in_channels, width, 3, padding=1),
                nn.LeakyReLU(0.2),
                nn.Conv2d(width, width, 3, padding=1),
                nn.LeakyReLU(0.2),
                nn.Conv2d(width, keypoints, 1),
            )
            if keypoints
            else None
        )
        self.gate = nn.Parameter(torch.zeros(()))  # the learned keypoints' weight, 0 at the start
        features = 2 * _MOMENTS * (keypoints + 2) + 2  # moments and their rates per map, and the two gaps
        self.mlp = nn.Sequential(
            nn.Linear(features * length, 2 * hidden), nn.GELU(), nn.Linear(2 * hidden, num_classes)
        )
        # 1 / std of (value, rate) x moment over the first training batch's parameter-free maps; 0 = unset
        self.register_buffer("scale", torch.zeros(2, _MOMENTS))

    def _maps(self, clips: Tensor, diff: Tensor) -> Tensor:
        """Clips and differences `(B, T, C, H, W)` -> maps `(B*T, K + 2, H, W)`: keypoints, intensity,
        motion."""
        mass = torch.stack([clips.mean(2), diff.abs().mean(2)], dim=2).flatten(0, 1).float()  # (B*T,2,H,W)
        fixed = mass / mass.sum((2, 3), keepdim=True).clamp_min(1e-6)
        if self.keypoint_net is None:
            return fixed
        logits = self.keypoint_net(torch.cat([clips, diff], dim=2).flatten(0, 1)).float()  # (B*T, K, H, W)
        learned = logits.flatten(2).softmax(-1).view_as(logits)
        return torch.cat([learned, fixed], dim=1)

    def forward(self, clips: Tensor, times: Tensor, time_unit: float) -> Tensor:
        b, t = clips.shape[:2]
        diff = torch.cat([torch.zeros_like(clips[:, :1]), clips.diff(dim=1)], dim=1)  # (B, T, C, H, W)
        moments = map_moments(self._maps(clips, diff)).view(b, t, -1, _MOMENTS)  # (B, T, K + 2, 5)
        gaps = time_gaps(times.to(clips.device), b, t).transpose(1, 2) / time_unit  # (B, T, 2)
        rates = moments.diff(dim=1) / gaps[:, 1:, :1, None].clamp_min(1e-3)  # per unit of time
        tracks = torch.stack([moments, torch.cat([torch.zeros_like(rates[:, :1]), rates], 1)], 3)
        scaled = bool(self.scale.any())
        if self.training and not scaled:  # (B, T, K + 2, 2, 5) -> std per (2, 5)
            std = tracks.detach()[:, :, -2:].permute(3, 4, 0, 1, 2).flatten(2).std(dim=2)
            self.scale.copy_(torch.where(std > 1e-6, 1 / std, torch.ones_like(std)))
            scaled = True
        tracks = tracks * (self.scale if scaled else 1.0)
        if self.keypoints:
            gate = torch.cat([self.gate.expand(self.keypoints), self.gate.new_ones(2)])
            tracks = tracks * gate[:, None, None]
        x = torch.cat([tracks.flatten(2), gaps], dim=2).transpose(1, 2)  # (B, F, T)
        if t != self.length:
            x = F.adaptive_avg_pool1d(x, self.length)  # any clip length -> (B, F, length)
        return self.mlp(x.flatten(1))


class MotionClassifier(nn.Module):
    """`forward(clips (B, T, C, H, W), times) -> (B, K)` class logits; `reader` "gru", "mlp" or
    "trajectory" (the module docstring). `base_channels`/`max_channels` size the conv stack of gru and
    mlp, `keypoints` the trajectory reader's learned maps (0: the parameter-free tracks only) and `length`
    the time steps an MLP reads."""

    def __init__(
        self, *, in_channels: int, image_size: int, num_classes: int, base_channels: int = 16,
        max_channels: int = 64, hidden: int = 64, time_unit: float = 0.1, reader: str = "gru",
        keypoints: int = 8, length: int = 16,
    ) -> None:  # fmt: skip
        super().__init__()
        if num_classes < 2:
            raise VidynError(f"a motion classifier needs num_classes >= 2; got {num_classes}")
        if reader not in READERS:
            raise VidynError(f"unknown motion classifier reader {reader!r}; use one of {', '.join(READERS)}")
        if keypoints < 0 or length < 2:
            raise VidynError(f"need keypoints >= 0 and length >= 2; got {keypoints} and {length}")
        self.in_channels, self.time_unit, self.reader_name = in_channels, float(time_unit), reader
        widths = _widths(image_size, base_channels, max_channels)
        if reader == "gru":
            self.reader = _GruReader(in_channels, num_classes, widths, hidden)
        elif reader == "mlp":
            self.reader = _MlpReader(in_channels, num_classes, widths, hidden, length)
        else:
            self.reader = _TrajectoryReader(in_channels, num_classes, hidden, keypoints, length)

    def forward(self, clips: Tensor, times: Tensor) -> Tensor:
        if clips.dim() != 5 or clips.shape[2] != self.in_channels:
            raise VidynError(f"clips must be (B, T, {self.in_channels}, H, W); got {tuple(clips.shape)}")
        return self.reader(clips, times, self.time_unit)


_ARGS = ("base_channels", "max_channels", "hidden", "time_unit", "reader", "keypoints", "length")


def build_motion_classifier(
    *, in_channels: int, image_size: int, num_classes: int, args: dict | None, where: str
) -> MotionClassifier:
    """A `MotionClassifier` from a config's argument dict `args` (named `where` in errors, e.g.
    "task.args.classifier_args"); an unknown key is a one-line error listing the known ones."""
    args = dict(args or {})
    unknown = sorted(set(args) - set(_ARGS))
    if unknown:
        raise VidynError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(_ARGS)}")
    return MotionClassifier(in_channels=in_channels, image_size=image_size, num_classes=num_classes, **args)
