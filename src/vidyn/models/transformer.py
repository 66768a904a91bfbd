"""Causal space-time Transformer video predictor (`transformer`, `transformer_tiny`).

Architecture: the Transformer of Vaswani et al. 2017 ("Attention Is All You Need": pre-norm multi-head
attention + MLP blocks, sinusoidal position encoding) applied to video with the *divided space-time
attention* of TimeSformer (Bertasius et al. 2021, "Is Space-Time Attention All You Need for Video
Understanding?"). Every frame is cut into `patch_size x patch_size` patches, each embedded as a token (a
strided convolution, i.e. a linear map of the flattened patch, as in ViT). Each block attends over time
(a patch to the same patch in earlier frames, causally), then over space (the patches of one frame), then
applies an MLP (`vidyn.nn.attention.DividedSpaceTimeBlock`). A linear head maps each output token back to
its `p x p x C` pixels. As in ConvLSTM/PredRNN (OpenSTL's heads) there is no output activation: `step`
and `rollout` return the raw frames, so the loss keeps its gradient at the bounds, and `forward` clamps
them to [0, 1]. The head is zero-initialised, so a fresh model predicts black (the other models'
starting point) rather than a sigmoid's 0.5 grey, which sparse scenes punish (measured: docs/prediction.md).

Objective: causal next-frame prediction. The token of frame `t` may see frames `0..t` only, and its output
is the prediction of frame `t+1`; so one parallel pass over a true clip trains every step at once
(teacher forcing), and inference feeds each prediction back as the next input (autoregressive).

Time. Positions are continuous timestamps in seconds, so the model accepts the interface's irregular
times (`continuous_time = True`). Times are taken relative to the first context frame (a clip starting at
12.3 s is treated like one starting at 0) and encoded with Vaswani's sinusoids at `time_scale * t`; with
`time_scale = 10` and frames 0.1 s apart (Moving MNIST here) the phases are exactly the integer positions
of the original encoding. Input token `t` carries `enc(t_t)` and, because it must predict the frame at
the *next requested* time, a learned projection of `[enc(t_{t+1}), enc(t_{t+1} - t_t)]`: without the
target time the output could only mean "one typical step later", and irregular or user-chosen target
times would be ignored. The gap term states the step size directly, which is what motion depends on.

Deviations from TimeSformer: no class token; causal temporal attention; no extra `temporal_fc` after the
temporal attention (see `vidyn.nn.attention`); temporal attention is limited to a sliding window of the
last `max_frames` frames, so sequences of any length run in bounded memory.

Inference keeps a key/value cache of earlier frames in every temporal attention (`DecodingState`), so
each autoregressive step embeds one new frame instead of re-encoding the whole sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor, nn

from vidyn.errors import VidynError
from vidyn.models.interface import batch_times
from vidyn.nn.attention import DividedSpaceTimeBlock, KVCache, sinusoidal_encoding
from vidyn.registry import MODELS


@dataclass
class DecodingState:
    """What an incremental run remembers: per-block key/value caches and the time origin `(B,)`."""

    caches: list[KVCache]
    origin: Tensor | None = None


class VideoTransformerPredictor(nn.Module):
    """Causal divided space-time Transformer predicting the frame at each next requested time.

    `max_frames` is the temporal attention window: each frame attends to itself and at most
    `max_frames - 1` earlier frames (full causal attention while the sequence is no longer than that).
    `time_scale` multiplies timestamps in seconds before the sinusoidal encoding (10: 0.1 s = 1 position).
    `residual` adds each input frame to the head's output, so the model predicts the change from the
    current frame (a fresh model is then copy_last); off by default, as in OpenSTL's predictors.
    """

    continuous_time = True
    scheduled_sampling = "standard"

    def __init__(
        self,
        *,
        in_channels: int,
        image_size: int,
        patch_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        dropout: float,
        max_frames: int,
        time_scale: float,
        residual: bool = False,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise VidynError(f"image_size ({image_size}) must be a multiple of patch_size ({patch_size})")
        if embed_dim % 2:
            raise VidynError(f"embed_dim ({embed_dim}) must be even for the sinusoidal time encoding")
        if embed_dim % num_heads:
            raise VidynError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        if depth < 1 or max_frames < 2 or time_scale <= 0:
            raise VidynError("transformer needs depth >= 1, max_frames >= 2 and time_scale > 0")
        self.in_channels = in_channels
        self.image_size = image_size
        self.patch_size = patch_size
        self.grid = image_size // patch_size
        self.embed_dim = embed_dim
        self.max_frames = max_frames
        self.time_scale = time_scale
        self.residual = residual

        self.patch_embed = nn.Conv2d(in_channels, embed_dim, patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(self.grid * self.grid, embed_dim))
        # Learned projection of [enc(target time), enc(target time - current time)].
        self.target_time = nn.Linear(2 * embed_dim, embed_dim)
        self.embed_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            DividedSpaceTimeBlock(embed_dim, num_heads, mlp_ratio, dropout) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, patch_size * patch_size * in_channels)
        self._init_weights()

    def _init_weights(self) -> None:
        # ViT/TimeSformer initialisation: truncated normal 0.02 for linears and position embeddings.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        # The pixel head starts at zero (as DiT's final layer): the first prediction is exactly black, or the
        # input frame with `residual`, instead of +-0.16 of noise (0.02 x sqrt(embed_dim) LayerNormed units).
        nn.init.zeros_(self.head.weight)

    # ---------------------------------------------------------------------------------- core
    def new_state(self) -> DecodingState:
        """An empty decoding state for `step` (one key/value cache per block)."""
        return DecodingState([KVCache(window=self.max_frames) for _ in self.blocks])

    def step(self, frames: Tensor, times: Tensor, next_times: Tensor, state: DecodingState) -> Tensor:
        """Feed the next `L` frames; return the predicted frames at `next_times`.

        frames `(B, L, C, H, W)` at `times` `(B, L)|(L,)`; `next_times` (same shape) are the times each
        input's output predicts (`times[:, 1:]` then the next requested time). Earlier frames come from
        `state`, which this call extends. Returns raw (unclamped) `(B, L, C, H, W)` frames; output `l`
        depends on inputs `<= l`.
        """
        times = batch_times(times, frames.shape[0]).to(frames.device)
        next_times = batch_times(next_times, frames.shape[0]).to(frames.device)
        if state.origin is None:
            state.origin = times[:, 0].detach()
        origin = state.origin.unsqueeze(1)  # (B, 1)
        x = self._embed(frames, times - origin, next_times - origin)  # (B, L, N, D)
        for block, cache in zip(self.blocks, state.caches, strict=True):
            x = block(x, window=self.max_frames, cache=cache)
        out = self._decode(x)  # (B, L, C, H, W)
        return out + frames if self.residual else out

    def _embed(self, frames: Tensor, times: Tensor, next_times: Tensor) -> Tensor:
        batch = frames.shape[0]
        x = rearrange(frames, "b l c h w -> (b l) c h w")
        x = self.patch_embed(x)  # (B*L, D, H/p, W/p)
        x = rearrange(x, "(b l) d gh gw -> b l (gh gw) d", b=batch)
        dim, scale = self.embed_dim, self.time_scale
        now = sinusoidal_encoding(times, dim, scale)  # (B, L, D)
        enc_next = sinusoidal_encoding(next_times, dim, scale)  # (B, L, D)
        enc_gap = sinusoidal_encoding(next_times - times, dim, scale)  # (B, L, D)
        target = torch.cat([enc_next, enc_gap], dim=-1)  # (B, L, 2D)
        time_token = now + self.target_time(target)  # (B, L, D)
        x = x + self.pos_embed + time_token.unsqueeze(2)  # (B, L, N, D)
        return self.embed_drop(x)

    def _decode(self, x: Tensor) -> Tensor:
        x = self.head(self.norm(x))  # (B, L, N, p*p*C)
        x = rearrange(
            x,
            "b l (gh gw) (p q c) -> b l c (gh p) (gw q)",
            gh=self.grid,
            p=self.patch_size,
            q=self.patch_size,
        )  # (B, L, C, H, W)
        return x

    # ---------------------------------------------------------------------------------- contract
    def forward(self, context: Tensor, context_times: Tensor, target_times: Tensor) -> Tensor:
        """Predict frames at `target_times` `(B, T_out)|(T_out,)`, autoregressively in time order.

        context `(B, T_in, C, H, W)` at increasing `context_times`; target times must increase and come
        after the last context time. Returns `(B, T_out, C, H, W)`.
        """
        self._check_frames(context, "context")
        batch, t_in = context.shape[:2]
        ctx_t = batch_times(context_times, batch).to(context.device)
        tgt_t = batch_times(target_times, batch).to(context.device)
        if ctx_t.shape[1] != t_in:
            raise VidynError(f"context has {t_in} frames but context_times {ctx_t.shape[1]}; pass one each")
        _check_increasing(ctx_t, "context_times")
        _check_increasing(tgt_t, "target_times")
        if tgt_t.shape[1] and not bool((tgt_t[:, 0] > ctx_t[:, -1]).all()):
            raise VidynError(
                "target_times must all come after the last context time; this model only extrapolates "
                "forwards (use an interpolating model such as vid_ode for times inside the context)"
            )
        if tgt_t.shape[1] == 0:
            return context.new_zeros((batch, 0, *context.shape[2:]))
        state = self.new_state()
        next_times = torch.cat([ctx_t[:, 1:], tgt_t[:, :1]], dim=1)  # (B, T_in)
        prediction = self.step(context, ctx_t, next_times, state)[:, -1:]  # (B, 1, C, H, W)
        outputs = [prediction]
        for k in range(1, tgt_t.shape[1]):  # raw predictions are fed back, as `rollout` does
            prediction = self.step(prediction, tgt_t[:, k - 1 : k], tgt_t[:, k : k + 1], state)
            outputs.append(prediction)
        return torch.cat(outputs, dim=1).clamp(0, 1)  # (B, T_out, C, H, W)

    def rollout(
        self, frames: Tensor, truth_mask: Tensor, *, times: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Training rollout: `next_frames[:, t]` predicts frame `t+1` from inputs `0..t`.

        The input at step `t >= 1` is the true frame where `truth_mask[:, t]` is True, else the previous
        prediction (kept in the graph). Leading steps that are true for the whole batch run as one
        parallel causal pass (all of them when the mask is all True); the rest run step by step with
        the key/value cache. `times` `(B, T)|(T,)` default to a regular grid of `1 / time_scale` s.
        Returns `((B, T-1, C, H, W), {})`, unclamped.
        """
        self._check_frames(frames, "frames")
        batch, length = frames.shape[:2]
        if length < 2:
            raise VidynError(f"rollout needs at least 2 frames; got {length}")
        if truth_mask.shape != (batch, length - 1) or truth_mask.dtype != torch.bool:
            shape = tuple(truth_mask.shape)
            raise VidynError(f"truth_mask must be bool of shape ({batch}, {length - 1}); got {shape}")
        if times is None:
            times = torch.arange(length, device=frames.device, dtype=torch.float32) / self.time_scale
        times = batch_times(times, batch).to(frames.device)
        if times.shape[1] != length:
            raise VidynError(f"times has {times.shape[1]} entries for {length} frames; pass one per frame")
        _check_increasing(times, "times")
        feed_truth = truth_mask.clone()
        feed_truth[:, 0] = True  # step 0 always sees the true frame
        all_true = feed_truth.all(dim=0)  # (T-1,)
        prefix = int(all_true.long().cumprod(0).sum())  # leading steps with truth for the whole batch
        feed_truth = feed_truth.to(frames.device)  # (a mask on the host: the prefix took no device sync)
        state = self.new_state()
        parallel = self.step(frames[:, :prefix], times[:, :prefix], times[:, 1 : prefix + 1], state)
        predictions = list(parallel.unbind(dim=1))
        for t in range(prefix, length - 1):
            use_truth = feed_truth[:, t].view(batch, 1, 1, 1)
            inputs = torch.where(use_truth, frames[:, t], predictions[-1]).unsqueeze(1)  # (B, 1, C, H, W)
            predictions.append(self.step(inputs, times[:, t : t + 1], times[:, t + 1 : t + 2], state)[:, 0])
        return torch.stack(predictions, dim=1), {}

    def _check_frames(self, frames: Tensor, name: str) -> None:
        expected = (self.in_channels, self.image_size, self.image_size)
        if frames.dim() != 5 or tuple(frames.shape[2:]) != expected or frames.shape[1] < 1:
            raise VidynError(
                f"{name} must have shape (B, T, {', '.join(map(str, expected))}) with T >= 1; got "
                f"{tuple(frames.shape)} (resize the frames or build the model with matching "
                "in_channels/image_size)"
            )


def _check_increasing(times: Tensor, name: str) -> None:
    if not bool(torch.isfinite(times).all()):
        raise VidynError(f"{name} contains NaN or infinite values; pass finite timestamps in seconds")
    if times.shape[1] > 1 and not bool((times.diff(dim=1) > 0).all()):
        raise VidynError(f"{name} must be strictly increasing (timestamps in seconds, in time order)")


@MODELS.register("transformer", family="predictor")
def transformer(
    in_channels: int = 1,
    image_size: int = 64,
    patch_size: int = 8,
    embed_dim: int = 128,
    depth: int = 4,
    num_heads: int = 4,
    mlp_ratio: float = 4.0,
    dropout: float = 0.0,
    max_frames: int = 64,
    time_scale: float = 10.0,
    residual: bool = False,
) -> VideoTransformerPredictor:
    """Causal divided space-time Transformer predictor (TimeSformer blocks, continuous timestamps)."""
    return VideoTransformerPredictor(
        in_channels=in_channels, image_size=image_size, patch_size=patch_size, embed_dim=embed_dim,
        depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, dropout=dropout, max_frames=max_frames,
        time_scale=time_scale, residual=residual,
    )  # fmt: skip


MODELS.variant(
    "transformer_tiny",
    of="transformer",
    description="Tiny Transformer predictor for tests (16x16 frames, patch 4, width 32, one block, 2 heads).",
    image_size=16,
    patch_size=4,
    embed_dim=32,
    depth=1,
    num_heads=2,
)
