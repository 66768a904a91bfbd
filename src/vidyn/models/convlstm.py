"""ConvLSTM frame predictor (Shi et al., NeurIPS 2015) as OpenSTL configures it for video prediction.

A stack of `ConvLSTMCell`s runs over patchified frames (p x p blocks folded into channels); a 1x1
convolution without bias ("conv_last") maps the top hidden state to the next frame. Training uses the
rollout of CONTRIBUTING.md: next-frame MSE over all T-1 steps, with OpenSTL's scheduled sampling deciding
at each step whether the input is the true frame or the model's own previous prediction.

Deviations from OpenSTL, on purpose:
- the four gates come from one convolution over `[x, h]` instead of `conv_x(x) + conv_h(h)`: the same
  function with one larger matrix product (see `vidyn.nn.conv_rnn.ConvLSTMCell`);
- OpenSTL's cell also builds `conv_o` and `conv_last` convolutions that its forward never calls (3.4M of
  the 15.0M parameters of its Moving MNIST model); they are left out, so the same configuration has
  11.7M parameters, all used;
- the head is linear, as in OpenSTL (no sigmoid). `rollout` returns it unclamped so the loss keeps its
  gradient everywhere and own predictions are fed back exactly as in OpenSTL; `forward` (inference)
  clamps its output to [0, 1], the frame range.

The paper's peephole terms are not used (OpenSTL has none). `RecurrentFramePredictor`, the shared
rollout/forward machinery, lives here and PredRNN reuses it.

Speed: where one step's convolutions cover few positions (batch x grid <= TIME_BATCH_MAX_POSITIONS,
e.g. OpenSTL's Moving MNIST batch 1 on a 16x16 grid), the cells' weight gradients are computed once for
the whole rollout (`vidyn.nn.time_batched`): the same gradients up to float rounding, measured faster
there and no faster at 1,024 positions (docs/speed.md), where the per-step products are already large.
In CPU training the cells' large 3x3 and 5x5 convolutions run as Winograd F(m x m, r x r) convolutions
(`vidyn.nn.winograd`: the same convolution with 2.25-4x fewer multiplications, equal up to float
rounding; `VIDYN_WINOGRAD=0` turns it off), the weight transform computed once per rollout.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from vidyn.errors import VidynError
from vidyn.models.interface import batch_times, regular_continuation
from vidyn.nn.conv_rnn import ConvLSTMCell
from vidyn.nn.patch import patchify, unpatchify
from vidyn.nn.time_batched import time_batched_weight_grads
from vidyn.registry import MODELS

# Batch x grid positions of one step up to which a rollout batches the weight gradients over time.
TIME_BATCH_MAX_POSITIONS = 512


def check_recurrent_args(
    in_channels: int,
    image_size: int,
    hidden_channels: int,
    num_layers: int,
    kernel_size: int,
    patch_size: int,
) -> None:
    """Validate the builder arguments shared by the recurrent predictors, raising VidynError."""
    for name, value in (
        ("in_channels", in_channels),
        ("image_size", image_size),
        ("hidden_channels", hidden_channels),
        ("num_layers", num_layers),
        ("kernel_size", kernel_size),
        ("patch_size", patch_size),
    ):
        if not isinstance(value, int) or value < 1:
            raise VidynError(f"{name} must be a positive integer; got {value!r}")
    if kernel_size % 2 != 1:
        raise VidynError(f"kernel_size must be odd (e.g. 3 or 5) for same-size states; got {kernel_size}")
    if image_size % patch_size:
        raise VidynError(
            f"image_size {image_size} is not divisible by patch_size {patch_size}; change one of them"
        )


def _step_sources(truth_mask: Tensor) -> list[bool | None]:
    """Per rollout step, what every clip reads: True = its true frame, False = its own prediction, None =
    mixed (a `torch.where`). Decided on the host from one copy of the mask (none when it is there already)
    instead of two device syncs per step; under `torch.compile` every step is a `torch.where`, which the
    compiler can trace, with the same results."""
    if torch.compiler.is_compiling():
        return [None] * truth_mask.shape[1]
    mask = truth_mask.cpu()  # (B, T-1)
    every, some = mask.all(dim=0).tolist(), mask.any(dim=0).tolist()
    return [True if e else (None if s else False) for e, s in zip(every, some, strict=True)]


class RecurrentFramePredictor(nn.Module):
    """Discrete-time recurrent predictor: the training rollout and `forward` built on a per-step `step`.

    Subclasses define `init_state(batch, height, width, like)` and
    `step(x, state, with_aux) -> (next_patch_frame, state, aux_term | None)` on patchified frames
    `(B, p*p*C, H/p, W/p)`, and may override `aux_losses`.
    """

    continuous_time = False
    scheduled_sampling = "standard"

    def __init__(self, in_channels: int, image_size: int, patch_size: int, layer_norm: bool) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.image_size = image_size
        self.patch_size = patch_size
        self.layer_norm = layer_norm
        self.frame_channels = patch_size * patch_size * in_channels
        self.grid_size = image_size // patch_size
        # Convolutions run on any grid: any frame size divisible by the patch (not with layer norm, whose
        # weights have the training grid's shape). None: the training size only.
        self.frame_size_multiple: int | None = None if layer_norm else patch_size

    def _build_stack(
        self, cell: type[nn.Module], hidden_channels: int, num_layers: int, kernel_size: int, bias: bool
    ) -> None:
        """The layer stack every recurrent predictor shares: `num_layers` cells and a 1x1 head, no bias."""
        self.hidden_channels = hidden_channels
        self.cells = nn.ModuleList(
            cell(
                self.frame_channels if layer == 0 else hidden_channels,
                hidden_channels,
                kernel_size,
                bias=bias,
                layer_norm=self.layer_norm,
                height=self.grid_size,
                width=self.grid_size,
            )
            for layer in range(num_layers)
        )
        self.conv_last = nn.Conv2d(hidden_channels, self.frame_channels, kernel_size=1, bias=False)

    def init_state(self, batch: int, height: int, width: int, like: Tensor) -> Any:
        raise NotImplementedError

    def step(self, x: Tensor, state: Any, with_aux: bool) -> tuple[Tensor, Any, Tensor | None]:
        raise NotImplementedError

    def aux_losses(self, terms: list[Tensor]) -> dict[str, Tensor]:
        """Turn the per-step auxiliary terms into weighted losses (none by default)."""
        return {}

    def _check_frames(self, frames: Tensor, what: str) -> None:
        if frames.dim() != 5 or frames.shape[2] != self.in_channels:
            raise VidynError(
                f"{what} must have shape (B, T, {self.in_channels}, H, W); got {tuple(frames.shape)} "
                f"(convert the video to {self.in_channels} channel(s))"
            )
        height, width = frames.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise VidynError(
                f"{what} size {height}x{width} is not divisible by patch_size {self.patch_size}; "
                f"resize the frames to {self.image_size}x{self.image_size}"
            )
        if self.layer_norm and (height, width) != (self.image_size, self.image_size):
            raise VidynError(
                f"this model uses layer_norm, which fixes the frame size to "
                f"{self.image_size}x{self.image_size}; got {height}x{width}: resize the frames"
            )

    def _unroll(self, frames: Tensor, truth_mask: Tensor, with_aux: bool) -> tuple[Tensor, dict[str, Tensor]]:
        batch, length = frames.shape[:2]
        p = self.patch_size
        # (B, T, C, H, W) -> (T, B, p*p*C, H/p, W/p), contiguous so that each step's input is one block.
        seq = patchify(frames, p).transpose(0, 1).contiguous()
        state = self.init_state(batch, seq.shape[-2], seq.shape[-1], seq)
        preds: list[Tensor] = []
        aux_terms: list[Tensor] = []
        x = seq[0]
        pred = x
        sources = _step_sources(truth_mask)
        if None in sources[1:]:  # some steps mix truth and predictions: the mask on the device, copied once
            truth_mask = truth_mask.to(seq.device)
        positions = batch * seq.shape[-2] * seq.shape[-1]  # of one step's convolutions
        batched = positions <= TIME_BATCH_MAX_POSITIONS and not torch.compiler.is_compiling()
        with time_batched_weight_grads(self.cells, enabled=batched):
            for t in range(length - 1):
                if t > 0:
                    if sources[t] is True:
                        x = seq[t]
                    elif sources[t] is False:
                        x = pred
                    else:
                        x = torch.where(truth_mask[:, t].view(batch, 1, 1, 1), seq[t], pred)
                pred, state, aux = self.step(x, state, with_aux)
                preds.append(pred)
                if aux is not None:
                    aux_terms.append(aux)
        # T-1 x (B, p*p*C, H/p, W/p) -> (B, T-1, C, H, W)
        next_frames = unpatchify(torch.stack(preds, dim=1), p)
        return next_frames, (self.aux_losses(aux_terms) if with_aux else {})

    def rollout(self, frames: Tensor, truth_mask: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Training rollout: `next_frames[:, t]` predicts frame t+1 (see CONTRIBUTING.md).

        frames `(B, T, C, H, W)`, truth_mask `(B, T-1)` bool -> `(B, T-1, C, H, W)` unclamped predictions
        and the model's already-weighted auxiliary losses.
        """
        self._check_frames(frames, "frames")
        batch, length = frames.shape[:2]
        if length < 2:
            raise VidynError(f"rollout needs at least 2 frames; got {length}")
        if truth_mask.shape != (batch, length - 1) or truth_mask.dtype != torch.bool:
            raise ValueError(
                f"truth_mask must be a bool tensor of shape ({batch}, {length - 1}); "
                f"got {truth_mask.dtype} {tuple(truth_mask.shape)}"
            )
        return self._unroll(frames, truth_mask, with_aux=True)

    def forward(self, context: Tensor, context_times: Tensor, target_times: Tensor) -> Tensor:
        """Predict the frames at `target_times`, which must continue the context's regular grid.

        Equals `rollout` on the context followed by the model's own predictions, keeping the last
        T_out outputs, clamped to [0, 1].
        """
        self._check_frames(context, "context")
        batch, num_context = context.shape[:2]
        ctx_times = batch_times(context_times, batch)
        if ctx_times.shape[1] != num_context:
            raise VidynError(f"context has {num_context} frames but context_times has {ctx_times.shape[1]}")
        _, num_future = regular_continuation(ctx_times, batch_times(target_times, batch))
        # The future frames are placeholders: the mask below never lets the model read them.
        frames = torch.cat([context, context.new_zeros(batch, num_future, *context.shape[2:])], dim=1)
        truth_mask = torch.zeros(batch, num_context + num_future - 1, dtype=torch.bool)  # host: no syncs
        truth_mask[:, :num_context] = True
        next_frames, _ = self._unroll(frames, truth_mask, with_aux=False)
        return next_frames[:, num_context - 1 :].clamp(0.0, 1.0)


class ConvLSTM(RecurrentFramePredictor):
    """Stacked ConvLSTM next-frame predictor (see the module docstring)."""

    scheduled_sampling = "standard"

    def __init__(
        self,
        *,
        in_channels: int,
        image_size: int,
        hidden_channels: int,
        num_layers: int,
        kernel_size: int,
        patch_size: int,
        layer_norm: bool,
        bias: bool,
    ) -> None:
        check_recurrent_args(in_channels, image_size, hidden_channels, num_layers, kernel_size, patch_size)
        super().__init__(in_channels, image_size, patch_size, layer_norm)
        self._build_stack(ConvLSTMCell, hidden_channels, num_layers, kernel_size, bias)

    def init_state(self, batch: int, height: int, width: int, like: Tensor) -> list[tuple[Tensor, Tensor]]:
        zeros = like.new_zeros(batch, self.hidden_channels, height, width)
        return [(zeros, zeros) for _ in self.cells]

    def step(
        self, x: Tensor, state: list[tuple[Tensor, Tensor]], with_aux: bool
    ) -> tuple[Tensor, list[tuple[Tensor, Tensor]], None]:
        new_state = []
        inp = x
        for cell, (h, c) in zip(self.cells, state, strict=True):
            h, c = cell(inp, h, c)
            new_state.append((h, c))
            inp = h
        return self.conv_last(inp), new_state, None


@MODELS.register("convlstm", family="predictor")
def convlstm(
    in_channels: int = 1,
    image_size: int = 64,
    hidden_channels: int = 64,
    num_layers: int = 2,
    kernel_size: int = 3,
    patch_size: int = 4,
    layer_norm: bool = False,
    bias: bool = False,
) -> ConvLSTM:
    """ConvLSTM (Shi et al. 2015) in OpenSTL's form; CPU-sized defaults (OpenSTL MMNIST: 4x128, k5, p4)."""
    return ConvLSTM(
        in_channels=in_channels,
        image_size=image_size,
        hidden_channels=hidden_channels,
        num_layers=num_layers,
        kernel_size=kernel_size,
        patch_size=patch_size,
        layer_norm=layer_norm,
        bias=bias,
    )


MODELS.variant(
    "convlstm_tiny",
    of="convlstm",
    description="Tiny ConvLSTM for tests (1 layer of 8 channels, 16x16 frames).",
    image_size=16,
    hidden_channels=8,
    num_layers=1,
)
