"""ODE-GAN: a continuous-time video generator, `z ~ N(0, I) -> Neural ODE -> latent path -> ResNet decoder`.

The system of seed 000 ("Hybrid Neural ODE-ResNet Video Generation": a Neural ODE evolves a latent state
over continuous time, a ResNet decoder with 3D convolutions turns the latent trajectory into frames, a
3D-CNN discriminator judges clips; BCE with label smoothing, Adam(0.5, 0.999)), built on Neural ODEs (Chen
et al., "Neural Ordinary Differential Equations", NeurIPS 2018) and closest to Gordon & Parde, "Latent
Neural Differential Equations for Video Generation" (2021; MoCoGAN-ODE: a small tanh ODE integrated
with rk4 over the frame times). The decoder is a residual up-sampling stack in the BigGAN/VideoGPT style
(Brock et al. 2019; Yan et al. 2021) whose first blocks are (2+1)D (`vidyn.nn.resnet3d`). The
discriminators and GAN losses are in `vidyn.models.video_discriminators`; they live in the task, never
in the exported model.

Generation. `noise` draws z ~ N(0, I) of size `content_dim + latent_dim`, split into a content code
(constant over the clip, as in MoCoGAN) and the code of the ODE's initial state. With `num_classes > 0` a
label embedding (row `num_classes` is a learned null embedding, used for label -1) shifts the initial
code and, with the content code, forms a conditioning vector c. The ODE state is a latent map y
`(latent_channels, S, S)` (S = `latent_size`, the decoder's first resolution; y0 a linear map of the
initial code), as the ODE-ConvGRU latents of Vid-ODE and sde_video's latent: the dynamics
`dy/dt = f(y, c)` are a conv net with tanh hidden layers over [y, c broadcast, x/y coordinates],
autonomous (no explicit t), so motion is local transport in the map. c is carried in the ODE state with
zero derivative so `adjoint=True` (`odeint_adjoint`) also returns its gradient. torchdiffeq integrates
the ODE to exactly the requested timestamps (rk4 by default; any `vidyn.nn.ode` method).

Times are relative to each clip's earliest requested time, which is where the clip starts: times
`(T,)` or `(B, T)`, any order, irregular and different per row; `[5.0, 5.1]` gives the same clip as
`[0.0, 0.1]`. Times are resolved to 0.1 ms. Batched times are integrated in one solve on the sorted union
of every row's (tap) times plus, for fixed-step methods, the multiples of `step_size` (so the step never
exceeds it whatever frame rate is asked); each row reads its own times from that grid.

Continuous time (the point of the seed): a 3D decoder's temporal kernels assume one frame spacing, so
here they never see the requested spacing. Each requested time t is decoded from its own stack of
`2 * temporal_blocks + 1` latent taps at t + k * `tap_interval` (fixed offsets in seconds), read off the
continuous ODE path; the (2+1)D blocks shrink that stack with valid temporal convolutions (3 taps each)
to the one frame at t, then 2D blocks finish it. A frame is therefore a function of its own timestamp
and the latent path around it, never of which other frames were requested: sampling a clip at twice
the frame rate gives the same frames at the shared times (up to the ODE solver's error), and the
temporal kernels always mean the same thing in seconds. The path needs taps before the first frame, so
the initial state sits `temporal_blocks * tap_interval` seconds before it (the ODE is integrated from
there). Every stage is computed once per distinct (clip, time) point it needs, so at a frame rate of
1 / `tap_interval` neighbouring frames share their taps and a clip costs little more than decoding
each frame on its own. The video discriminator is given the time gaps between the frames it sees, so
training can also use varied frame rates.

Motion as transport (`warp_frames`, off by default): the head also outputs a flow and a mask, and each
frame is `m * warp(R, flow) + (1 - m) * image`, R the clip's image at its first time (as Vid-ODE's
decoder composes frames, and flow-based video generators do): moving an object becomes a smooth flow
field instead of erasing and redrawing it. R is at the clip's start, so frames still depend only on their
own time and the start (any frame rate gives the same frames at shared times). `flow_roughness` (the
flows' mean |difference| between neighbouring pixels) can be penalised by the GAN task (`flow_smoothness`).

Motion regions (`motion_regions` K > 0, with `warp_frames`): the flow is K soft regions over a still
background, each moved by one map about its centroid (`vidyn.nn.warp.AffineRegionFlow`: FOMM's local
affine motion, Siarohin et al. 2019/2021, driven by the ODE path instead of a driving video);
`region_transform` "affine" (any 2x2 map) or "similarity" (rotation and a bounded uniform scale). A free
flow lets an object's pixels drift apart (a square becomes a crescent); a region's map moves them
together, and a similarity keeps the object's shape.

Relative flow (`relative_flow`, with `warp_frames`): each frame's decoded flow minus the flow decoded at
the clip's start, so the first frame is exactly R and every later frame transports R's pixels by how far
the motion has come since the start (the flow-based generators' convention, and Vid-ODE's, whose first
frame is the observed one). Without it the start's own flow is free: trained generators warp a zoomed
piece of a bright first image even at the start (docs/generation.md, sessions 13 and 29).

Deviations: Gordon & Parde's ODE function is one Linear+Tanh on a latent vector over `linspace(0, 1,
16)`; here a conv net of `ode_layers` tanh layers over a latent map plus a constant conditioning vector,
with time in seconds (a first version's vector latent and MLP: docs/generation.md).
The seed does not say how its latent trajectory reaches the 3D decoder; the tap stack above is this
package's design. GroupNorm, not BatchNorm, so a sample never depends on its batch or on train/eval mode.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from vidyn.errors import VidynError
from vidyn.models.interface import Condition
from vidyn.models.ode_gan_checks import TICKS, check_sizes, check_solver_and_classes, check_times, up_levels
from vidyn.nn.ode import FIXED_STEP_METHODS, LatentODEFunc, odesolve, with_condition
from vidyn.nn.resnet3d import UpBlock2d, UpBlock3d, group_norm
from vidyn.nn.warp import AffineRegionFlow, warp
from vidyn.registry import MODELS


class OdeGAN(nn.Module):
    """Continuous-time video generator; see the module docstring.

    `sample(num_samples, times, *, condition=None, generator=None) -> (B, T, C, H, W)` in [0, 1];
    `forward(z, times, labels=None)` is the same from explicit noise `z = noise(B)` (for training).
    `nfe` is the number of ODE-function evaluations of the last call (the adjoint backward adds to it);
    `flow_roughness` the last call's flow roughness (a 0-d tensor in the graph; None without warp_frames).
    """

    continuous_time = True

    def __init__(
        self,
        *,
        in_channels: int,
        image_size: int,
        latent_dim: int,
        latent_channels: int,
        latent_size: int,
        content_dim: int,
        ode_hidden: int,
        ode_layers: int,
        method: str,
        rtol: float,
        atol: float,
        step_size: float | None,
        adjoint: bool,
        num_classes: int,
        class_dim: int,
        base_channels: int,
        max_channels: int,
        temporal_blocks: int,
        tap_interval: float,
        warp_frames: bool = False,
        motion_regions: int = 0,
        region_transform: str = "affine",
        relative_flow: bool = False,
    ) -> None:
        super().__init__()
        check_sizes(
            in_channels=in_channels, image_size=image_size, latent_dim=latent_dim, content_dim=content_dim,
            ode_hidden=ode_hidden, ode_layers=ode_layers, base_channels=base_channels,
            latent_channels=latent_channels, latent_size=latent_size,
        )  # fmt: skip
        num_up = up_levels(image_size, latent_size, temporal_blocks)
        check_solver_and_classes(method, step_size, tap_interval, num_classes, class_dim)
        self.in_channels, self.image_size, self.num_classes = in_channels, image_size, num_classes
        self.latent_dim, self.content_dim = latent_dim, content_dim
        self.latent_shape = (latent_channels, latent_size, latent_size)
        self.method, self.rtol, self.atol, self.adjoint = method, rtol, atol, adjoint
        self.step_size, self.tap_interval = step_size, float(tap_interval)
        self.taps = 2 * temporal_blocks + 1  # each (2+1)D block removes 2 taps (valid kernel 3)

        cond_dim = content_dim + (class_dim if num_classes else 0)
        if num_classes:
            self.class_embedding = nn.Embedding(num_classes + 1, class_dim)  # row num_classes: null label
            self.class_to_state = nn.Linear(class_dim, latent_dim)
        self.to_state = nn.Linear(latent_dim, latent_channels * latent_size**2)  # y0, a map
        self.func = LatentODEFunc(latent_channels, latent_size, cond_dim, ode_hidden, ode_layers)

        widths = [min(max_channels, base_channels * 2 ** (num_up - i)) for i in range(num_up + 1)]
        self.to_map = nn.Conv2d(latent_channels + cond_dim + 2, widths[0], 3, padding=1)  # at S x S
        self.blocks3d = nn.ModuleList(UpBlock3d(widths[i], widths[i + 1]) for i in range(temporal_blocks))
        self.blocks2d = nn.ModuleList(
            UpBlock2d(widths[i], widths[i + 1]) for i in range(temporal_blocks, num_up)
        )
        self.warp_frames, self.motion_regions = bool(warp_frames), int(motion_regions)
        if relative_flow and not warp_frames:
            raise VidynError("relative_flow needs warp_frames: true (it is the warp flow from the start)")
        self.relative_flow = bool(relative_flow)
        self.flow_roughness: Tensor | None = None
        self._build_head(widths, temporal_blocks, region_transform)

    def _build_head(self, widths: list[int], temporal_blocks: int, region_transform: str) -> None:
        """The output head: the image (+ with `warp_frames` a flow (2), or the logits of K regions and
        the background (K + 1), then a blend mask), and the motion regions' transforms."""
        k = self.motion_regions
        if k < 0 or (k and not self.warp_frames):
            raise VidynError("motion_regions must be >= 0, and > 0 only with warp_frames: true")
        if region_transform not in AffineRegionFlow.TRANSFORMS:
            raise VidynError(f"region_transform must be affine or similarity; got {region_transform!r}")
        motion_out = k + 1 if k else 2  # region logits, or a flow
        head_out = self.in_channels + (motion_out + 1 if self.warp_frames else 0)  # + the blend mask
        self.head = nn.Sequential(
            group_norm(widths[-1]), nn.ReLU(), nn.Conv2d(widths[-1], head_out, 3, padding=1)
        )
        if k:
            self.regions = AffineRegionFlow(
                widths[-1], widths[temporal_blocks], k, pixel_scale=self.image_size / 16,
                transform=region_transform,
            )  # fmt: skip

    @property
    def noise_dim(self) -> int:
        return self.content_dim + self.latent_dim

    @property
    def nfe(self) -> int:
        return self.func.nfe

    def noise(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """z ~ N(0, I), `(num_samples, content_dim + latent_dim)`, on the model's device."""
        device = self.to_map.weight.device
        draw_on = generator.device if generator is not None else device
        return torch.randn(num_samples, self.noise_dim, generator=generator, device=draw_on).to(device)

    def sample(
        self,
        num_samples: int,
        times: Tensor,
        *,
        condition: Condition | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Clips `(num_samples, T, C, H, W)` in [0, 1] at `times` (`(T,)` or `(num_samples, T)`, seconds).

        `condition.labels` `(1,)` or `(num_samples,)`: class ids, -1 for unconditional; frames are not
        supported. Not wrapped in `no_grad`: call it under `torch.no_grad()` for inference.
        """
        if not isinstance(num_samples, int) or num_samples < 1:
            raise VidynError(f"num_samples must be a positive integer; got {num_samples!r}")
        labels = None
        if condition is not None:
            if condition.frames is not None or condition.times is not None:
                raise VidynError("ode_gan generates from noise and a class only; drop condition.frames/times")
            labels = condition.labels
            if labels is not None and labels.dim() == 1 and labels.shape[0] == 1:
                labels = labels.expand(num_samples)
        return self(self.noise(num_samples, generator), times, labels)

    def forward(self, z: Tensor, times: Tensor, labels: Tensor | None = None) -> Tensor:
        """Clips `(B, T, C, H, W)` in [0, 1] from noise z `(B, noise_dim)` at `times` `(T,)`/`(B, T)`."""
        if z.dim() != 2 or z.shape[1] != self.noise_dim:
            raise VidynError(f"z must be (B, {self.noise_dim}) from model.noise(B); got {tuple(z.shape)}")
        b = z.shape[0]
        times = check_times(times, b).to(z.device)
        k = times.shape[1]
        cond, y0 = self._codes(z, labels)
        points, stacks, frame_index, frame_points = self._plan(times)
        latent = self._solve(self.to_state(y0), cond, points)  # (P_0, C_y * S * S) at the distinct taps
        x = self.to_map(with_condition(latent.view(-1, *self.latent_shape), cond[points[:, 0]]))
        for block, index in zip(self.blocks3d, stacks, strict=True):
            # each point's stack of 3 taps: (P_i, 3) indices -> (P_i, 3, C, h, w) -> (P_i, C, 3, h, w)
            x = block(x[index].transpose(1, 2))[:, :, 0]  # -> (P_i, C', 1, 2h, 2w) -> (P_i, C', 2h, 2w)
        mid = x  # (P_L, C_mid, h, w): the frame points' features after the temporal blocks
        for block in self.blocks2d:
            x = block(x)
        frames = self._frames(x, mid, frame_points)  # (P_L, C, H, W) at the distinct frame times
        return frames[frame_index].view(b, k, *frames.shape[1:])  # (B*K, C, H, W) -> (B, K, C, H, W)

    def _frames(self, x: Tensor, mid: Tensor, frame_points: Tensor) -> Tensor:
        """Decoder features `(P, C_x, H, W)` at the frame points `(P, 2)` -> frames in [0, 1]. With
        `warp_frames`, each clip's image at its first time (u = start, the reference R) is warped by
        each frame's flow and blended with that frame's own image: `m * warp(R, flow) + (1 - m) * image`."""
        out, c = self.head(x), self.in_channels
        image = torch.sigmoid(out[:, :c])
        if not self.warp_frames:
            return image
        start = round(self.tap_interval * TICKS) * len(self.blocks3d)  # u of each clip's first time
        clips = frame_points[:, 0]
        is_ref = frame_points[:, 1] == start  # exactly one point per clip
        ref_of_clip = torch.zeros(int(clips.max()) + 1, dtype=torch.long, device=out.device)
        ref_of_clip[clips[is_ref]] = torch.nonzero(is_ref).squeeze(1)
        ref_index = ref_of_clip[clips]  # (P,): each point's clip's start point
        reference = image[ref_index]  # (P, C, H, W)
        motion, mask = out[:, c:-1], torch.sigmoid(out[:, -1:])  # flow or region logits; blend mask
        if self.motion_regions:
            flow = self.regions(x, mid, motion)
        else:
            flow = motion * (self.image_size / 16)  # pixels
        if self.relative_flow:  # the start's own flow is zero: its frame is the reference itself
            flow = flow - flow[ref_index]
        self.flow_roughness = flow.diff(dim=-1).abs().mean() + flow.diff(dim=-2).abs().mean()
        return mask * warp(reference, flow) + (1 - mask) * image

    def _plan(self, times: Tensor) -> tuple[Tensor, list[Tensor], Tensor, Tensor]:
        """Which (clip, time) points each decoder stage computes, from the frames back to the latent taps.

        Times become integer ticks (0.1 ms) of ODE time (`u = t - t_min + R`, the state y0 at u = 0), so
        taps shared by neighbouring frames are computed once. Returns the latent-level points `(P_0, 2)`
        (clip, u), per 3D block the indices `(P_i, 3)` of each of its points' taps among the previous
        stage's points, each frame's index `(B*K,)` among the last stage's points, and those points.
        """
        b, k = times.shape
        rel = torch.round((times.double() - times.double().amin(dim=1, keepdim=True)) * TICKS).long()
        tap = round(self.tap_interval * TICKS)
        rows = torch.arange(b, device=times.device).unsqueeze(1).expand(b, k)  # (B, K)
        frames = torch.stack([rows, rel + tap * len(self.blocks3d)], dim=-1).view(b * k, 2)  # (clip, u)
        points, frame_index = torch.unique(frames, dim=0, return_inverse=True)
        frame_points = points
        shifts = torch.tensor([[0, -tap], [0, 0], [0, tap]], device=times.device)
        stacks = []
        for _ in self.blocks3d:
            taps = (points[:, None, :] + shifts).view(-1, 2)  # (P, 3, 2) -> (P*3, 2)
            points, inverse = torch.unique(taps, dim=0, return_inverse=True)
            stacks.append(inverse.view(-1, 3))
        return points, stacks[::-1], frame_index, frame_points

    def _solve(self, y0: Tensor, cond: Tensor, points: Tensor) -> Tensor:
        """Flat ODE states `(P, C_y * S * S)` at the points `(P, 2)` = (clip, u in ticks)."""
        u = points[:, 1].contiguous()
        grid = [u.new_zeros(1), u]
        if self.step_size is not None and self.method in FIXED_STEP_METHODS:
            step = max(round(self.step_size * TICKS), 1)
            grid.append(torch.arange(0, int(u.max()) + step, step, device=u.device))
        grid_us = torch.unique(torch.cat(grid))  # sorted, distinct ticks
        self.func.nfe = 0
        state0 = torch.cat([y0, cond], dim=1)  # (B, C_y * S * S + cond_dim)
        once = contextlib.nullcontext() if self.adjoint else self.func.constant_condition(cond)
        with once:
            path = odesolve(
                self.func,
                state0,
                grid_us.double() / TICKS,
                method=self.method,
                rtol=self.rtol,
                atol=self.atol,
                adjoint=self.adjoint,
            )  # (G, B, C_y * S * S + cond_dim)
        return path[torch.searchsorted(grid_us, u), points[:, 0], : self.func.state_dim]

    def _codes(self, z: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor]:
        """Conditioning vector `(B, content_dim [+ class_dim])` and initial ODE state `(B, latent_dim)`."""
        content, y0 = z[:, : self.content_dim], z[:, self.content_dim :]
        index = self._label_index(labels, z.shape[0], z.device)
        if index is None:
            return content, y0
        emb = self.class_embedding(index)  # (B, class_dim)
        return torch.cat([content, emb], dim=1), y0 + self.class_to_state(emb)

    def _label_index(self, labels: Tensor | None, b: int, device: torch.device) -> Tensor | None:
        """Embedding rows `(B,)` (the null row for -1), or None for an unconditional model."""
        if labels is not None:
            if labels.shape != (b,) or labels.dtype.is_floating_point or labels.dtype == torch.bool:
                raise VidynError(
                    f"labels must be int64 of shape ({b},); got {labels.dtype} {tuple(labels.shape)}"
                )
            if bool(((labels < -1) | (labels >= self.num_classes)).any()):
                valid = f"0..{self.num_classes - 1} or -1" if self.num_classes else "-1 (unconditional model)"
                raise VidynError(f"labels must be in {valid}; got {labels.tolist()}")
        if not self.num_classes:
            return None
        if labels is None:
            return torch.full((b,), self.num_classes, dtype=torch.long, device=device)
        labels = labels.to(device=device, dtype=torch.long)
        return torch.where(labels < 0, self.num_classes, labels)


@MODELS.register("ode_gan", family="generator")
def ode_gan(
    *,
    in_channels: int = 3,
    image_size: int = 64,
    latent_dim: int = 64,
    latent_channels: int = 16,
    latent_size: int = 8,
    content_dim: int = 64,
    ode_hidden: int = 64,
    ode_layers: int = 2,
    method: str = "rk4",
    rtol: float = 1e-3,
    atol: float = 1e-4,
    step_size: float | None = 0.05,
    adjoint: bool = False,
    num_classes: int = 0,
    class_dim: int = 32,
    base_channels: int = 32,
    max_channels: int = 256,
    temporal_blocks: int = 2,
    tap_interval: float = 0.1,
    warp_frames: bool = False,
    motion_regions: int = 0,
    region_transform: str = "affine",
    relative_flow: bool = False,
) -> OdeGAN:
    """Neural-ODE video GAN generator (seed 000; Gordon & Parde 2021): tanh ODE + (2+1)D ResNet decoder.

    z = [content (`content_dim`), initial code (`latent_dim`)]; the ODE state is a `latent_channels` x
    `latent_size`^2 map (`image_size / latent_size` a power of two) whose conv dynamics have
    `ode_layers` tanh layers of `ode_hidden` channels; `method` "rk4" (default), "euler", "dopri5", ...
    with `rtol`/`atol` for adaptive methods, fixed-step methods stepping at most `step_size` seconds
    (None: on the requested times only); `adjoint` integrates with `odeint_adjoint`. `num_classes` > 0
    adds a label embedding of `class_dim` with a null label (-1). Decoder widths double from
    `base_channels` at full size up to `max_channels` at the latent size; the first `temporal_blocks`
    up-blocks are (2+1)D over latent taps `tap_interval` seconds apart. `warp_frames`: each frame blends
    its own image with the clip's first image warped by a decoded flow (motion as transport);
    `motion_regions` K > 0 makes that flow K regions over a still background, each moved by one
    `region_transform` ("affine" or "similarity": rotation and uniform scale); `relative_flow` takes each
    frame's flow relative to the start's, so the clip's first frame is its reference image exactly.
    """
    return OdeGAN(**locals())  # the builder's arguments are the constructor's, by name


MODELS.variant(
    "ode_gan_tiny",
    of="ode_gan",
    description="Tiny ODE-GAN generator for tests: 16x16, 8-d noise, a 4x4x4 latent map, 8-16 channels.",
    image_size=16,
    latent_dim=8,
    latent_channels=4,
    latent_size=4,
    content_dim=8,
    ode_hidden=16,
    ode_layers=1,
    class_dim=8,
    base_channels=8,
    max_channels=16,
)
