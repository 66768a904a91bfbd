"""PredRNN (Wang et al., NeurIPS 2017) and PredRNN-V2 (Wang et al., TPAMI 2022) frame predictors.

Both stack spatiotemporal LSTM cells (`vidyn.nn.conv_rnn.SpatioTemporalLSTMCell`) over patchified
frames, with a 1x1 convolution without bias ("conv_last") from the top hidden state to the next frame.
The spatiotemporal memory M zigzags: within a time step it flows from layer l to layer l+1, and the top
layer's M at step t is layer 1's M at step t+1 (one `m` threaded through every cell call). Each layer
keeps its own temporal states (h, c).

PredRNN-V2 adds (i) the memory-decoupling loss: a shared 1x1 adapter convolution without bias maps the
increments delta_c = i*g and delta_m = i'*g' of every cell at every step; each channel's adapted map is
flattened over space and L2-normalised, and the loss is the mean over layers, steps, batch and channels of
|cos(adapter(delta_c), adapter(delta_m))|, weighted by `decouple_beta` (0.1; the paper uses 0.01 on KTH),
exactly as the official code computes it; and (ii) reverse scheduled sampling
(`scheduled_sampling = "reverse"`, see `vidyn.tasks.sampling`).

Matches the official code (thuml/predrnn-pytorch) and OpenSTL, except: a single `hidden_channels` for all
layers (both codes accept a list but every published config uses one width), convolution biases off by
default as in OpenSTL (the official code keeps PyTorch's default biases; `bias=True` gives those), and a
linear head whose output `forward` clamps to [0, 1] (`rollout` returns it unclamped, see ConvLSTM).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidyn.errors import VidynError
from vidyn.models.convlstm import RecurrentFramePredictor, check_recurrent_args
from vidyn.nn.compiled import compiled_or_eager
from vidyn.nn.conv_rnn import SpatioTemporalLSTMCell
from vidyn.registry import MODELS

# Per-layer temporal states and the one zigzag memory: ([h_1..h_L], [c_1..c_L], m).
PredRNNState = tuple[list[Tensor], list[Tensor], Tensor]


def decoupling_loss(delta_c: Tensor, delta_m: Tensor, adapter: nn.Module) -> Tensor:
    """Mean |cosine similarity| between adapted memory increments, per (sample, channel) over space.

    delta_c, delta_m `(N, C, H, W)` -> scalar. Matches PredRNN-V2's official definition: each channel's
    adapted map is flattened over H*W and L2-normalised before the cosine.
    """
    n = delta_c.shape[0]
    # One adapter call for both increments: (2N, C, H, W) -> (2N, C, H*W)
    adapted = F.normalize(adapter(torch.cat([delta_c, delta_m], dim=0)).flatten(2), dim=2)
    a_c, a_m = adapted.split(n, dim=0)
    return F.cosine_similarity(a_c, a_m, dim=2).abs().mean()


class PredRNN(RecurrentFramePredictor):
    """Stacked ST-LSTM next-frame predictor with zigzag spatiotemporal memory (PredRNN, 2017)."""

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
        self._build_stack(SpatioTemporalLSTMCell, hidden_channels, num_layers, kernel_size, bias)

    def init_state(self, batch: int, height: int, width: int, like: Tensor) -> PredRNNState:
        zeros = like.new_zeros(batch, self.hidden_channels, height, width)
        return [zeros] * len(self.cells), [zeros] * len(self.cells), zeros

    def step(
        self, x: Tensor, state: PredRNNState, with_aux: bool
    ) -> tuple[Tensor, PredRNNState, Tensor | None]:
        hs, cs, m = state
        new_h: list[Tensor] = []
        new_c: list[Tensor] = []
        deltas_c: list[Tensor] = []
        deltas_m: list[Tensor] = []
        inp = x
        for cell, h, c in zip(self.cells, hs, cs, strict=True):
            # m enters layer l+1 straight from layer l, and leaves the top layer for layer 1 of the next step.
            h, c, m, delta_c, delta_m = cell(inp, h, c, m)
            new_h.append(h)
            new_c.append(c)
            deltas_c.append(delta_c)
            deltas_m.append(delta_m)
            inp = h
        aux = self.step_aux(deltas_c, deltas_m) if with_aux else None
        return self.conv_last(inp), (new_h, new_c, m), aux

    def step_aux(self, deltas_c: list[Tensor], deltas_m: list[Tensor]) -> Tensor | None:
        """Per-step auxiliary term from the cells' memory increments (none for PredRNN)."""
        return None


class PredRNNV2(PredRNN):
    """PredRNN-V2: PredRNN plus the memory-decoupling loss, trained with reverse scheduled sampling."""

    scheduled_sampling = "reverse"

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
        decouple_beta: float,
    ) -> None:
        super().__init__(
            in_channels=in_channels, image_size=image_size, hidden_channels=hidden_channels,
            num_layers=num_layers, kernel_size=kernel_size, patch_size=patch_size, layer_norm=layer_norm,
            bias=bias,
        )  # fmt: skip
        self.decouple_beta = float(decouple_beta)
        # One adapter shared by every layer, as in the official code.
        self.adapter = nn.Conv2d(hidden_channels, hidden_channels, kernel_size=1, bias=False)

    def step_aux(self, deltas_c: list[Tensor], deltas_m: list[Tensor]) -> Tensor:
        """The step's increments channels-last, layers along the batch: `(2*L*B, H, W, C)`, delta_c first."""
        return torch.cat([d.permute(0, 2, 3, 1) for d in (*deltas_c, *deltas_m)])

    def aux_losses(self, terms: list[Tensor]) -> dict[str, Tensor]:
        # All steps and layers at once: every (step, layer) has the same (B, C) count, so the mean over
        # (T*L*B, C) equals the official mean over steps and layers of the per-layer means.
        deltas = torch.stack(terms).unflatten(1, (2, -1))  # T x (2*L*B, H, W, C) -> (T, 2, L*B, H, W, C)
        weight = self.adapter.weight.flatten(1)  # (C_out, C_in) of the 1x1 convolution
        # Compiled where it pays: tiny models (the tests') would spend seconds compiling to save microseconds.
        fn = _rollout_decoupling if deltas.numel() >= COMPILE_MIN_NUMEL else _rollout_decoupling_eager
        return {"decouple": self.decouple_beta * fn(deltas, weight)}


def _rollout_decoupling_eager(deltas: Tensor, weight: Tensor) -> Tensor:
    """`decoupling_loss` averaged over a rollout's steps, from `(T, 2, L*B, H, W, C)` channels-last
    increments and the adapter's `(C, C)` weight: the 1x1 adapter as one matrix product over channels,
    then per (step, sample, channel) the L2 normalisation over space and the |cosine|."""
    t, _, n, h, w, c = deltas.shape
    adapted = (deltas.reshape(-1, c) @ weight.t()).view(t, 2, n, h * w, c)
    adapted = F.normalize(adapted, dim=3)
    return F.cosine_similarity(adapted[:, 0], adapted[:, 1], dim=2).abs().mean()


# One fused loop each way: about half the time of the per-step form at issue 16's small configuration
# (docs/speed.md "Session 17"); below COMPILE_MIN_NUMEL increments the eager form runs.
_rollout_decoupling = compiled_or_eager(_rollout_decoupling_eager, _rollout_decoupling_eager)
COMPILE_MIN_NUMEL = 1 << 20


def _check_beta(decouple_beta: float) -> None:
    if decouple_beta < 0:
        raise VidynError(f"decouple_beta must be >= 0 (paper: 0.1, 0.01 on KTH); got {decouple_beta}")


@MODELS.register("predrnn", family="predictor")
def predrnn(
    in_channels: int = 1,
    image_size: int = 64,
    hidden_channels: int = 64,
    num_layers: int = 2,
    kernel_size: int = 3,
    patch_size: int = 4,
    layer_norm: bool = False,
    bias: bool = False,
) -> PredRNN:
    """PredRNN (Wang et al. 2017), ST-LSTM with zigzag memory; CPU-sized defaults (OpenSTL: 4x128, k5, p4)."""
    return PredRNN(
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
    "predrnn_tiny",
    of="predrnn",
    description="Tiny PredRNN for tests (2 layers of 8 channels so the memory zigzag is exercised; 16x16).",
    image_size=16,
    hidden_channels=8,
)


@MODELS.register("predrnn_v2", family="predictor")
def predrnn_v2(
    in_channels: int = 1,
    image_size: int = 64,
    hidden_channels: int = 64,
    num_layers: int = 2,
    kernel_size: int = 3,
    patch_size: int = 4,
    layer_norm: bool = False,
    bias: bool = False,
    decouple_beta: float = 0.1,
) -> PredRNNV2:
    """PredRNN-V2 (Wang et al. 2022): PredRNN + memory-decoupling loss + reverse scheduled sampling."""
    _check_beta(decouple_beta)
    return PredRNNV2(
        in_channels=in_channels,
        image_size=image_size,
        hidden_channels=hidden_channels,
        num_layers=num_layers,
        kernel_size=kernel_size,
        patch_size=patch_size,
        layer_norm=layer_norm,
        bias=bias,
        decouple_beta=decouple_beta,
    )


MODELS.variant(
    "predrnn_v2_tiny",
    of="predrnn_v2",
    description="Tiny PredRNN-V2 for tests (2 layers of 8 channels, 16x16 frames).",
    image_size=16,
    hidden_channels=8,
)
