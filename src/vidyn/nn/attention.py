"""Attention and time-encoding blocks shared by the attention-based models.

- `sinusoidal_encoding`: the sine/cosine encoding of Vaswani et al. 2017 ("Attention Is All You Need"),
  evaluated at continuous values (timestamps in seconds times a scale) instead of integer positions.
- `MultiHeadSelfAttention`: pre-projection multi-head self-attention on
  `torch.nn.functional.scaled_dot_product_attention`, optionally causal, optionally limited to a sliding
  window of the most recent `window` positions, with an optional `KVCache` for incremental decoding.
- `DividedSpaceTimeBlock`: the "divided space-time attention" block of TimeSformer (Bertasius et al. 2021,
  "Is Space-Time Attention All You Need for Video Understanding?"): temporal attention over the same patch
  across frames, then spatial attention among the patches of one frame, then an MLP, each pre-norm with a
  residual. Deviations from TimeSformer: temporal attention is causal (for prediction), there is no class
  token, and the extra `temporal_fc` linear TimeSformer applies after its temporal attention is omitted
  because it directly follows the attention's own output projection (two linears in a row add no capacity).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


def sinusoidal_encoding(values: Tensor, dim: int, scale: float = 1.0, base: float = 10000.0) -> Tensor:
    """Sine/cosine encoding of continuous values: `(...,)` -> `(..., dim)` float32.

    Channel `i < dim/2` is `sin(scale * v * base^(-2i/dim))` and channel `dim/2 + i` the matching cosine
    (Vaswani et al. 2017 interleave them; a fixed permutation of channels changes nothing downstream).
    With `scale = 1` and integer `values` this is exactly the Transformer's positional encoding.
    """
    if dim % 2:
        raise ValueError(f"sinusoidal_encoding needs an even dim; got {dim}")
    half = dim // 2
    freqs = torch.exp(
        -math.log(base) * torch.arange(half, device=values.device, dtype=torch.float64) * 2.0 / dim
    )
    # float64 phases keep large timestamps (minutes of video at a fine scale) accurate before sin/cos.
    phase = values.to(torch.float64).unsqueeze(-1) * scale * freqs  # (..., half)
    return torch.cat([phase.sin(), phase.cos()], dim=-1).to(torch.float32)  # (..., dim)


def causal_mask(q_len: int, k_len: int, window: int | None, device: torch.device) -> Tensor:
    """Boolean `(q_len, k_len)` mask, True where attention is allowed.

    The `q_len` queries are the last `q_len` of the `k_len` positions (a cache holds the earlier ones);
    a query sees itself and earlier positions, and with `window` only the `window` most recent of them.
    """
    q_pos = torch.arange(k_len - q_len, k_len, device=device).unsqueeze(1)  # (q_len, 1)
    k_pos = torch.arange(k_len, device=device).unsqueeze(0)  # (1, k_len)
    allowed = k_pos <= q_pos
    if window is not None:
        allowed &= k_pos > q_pos - window
    return allowed


class KVCache:
    """Keys and values of earlier positions for one attention layer, `(batch, heads, length, head_dim)`.

    With a window the cache keeps only the `window - 1` most recent positions (all a new query may see
    besides itself), so autoregressive decoding costs O(window) per step and bounded memory however long
    it runs.
    """

    def __init__(self, window: int | None = None) -> None:
        self.window = window
        self.keys: Tensor | None = None
        self.values: Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.keys is None else self.keys.shape[-2]

    def extend(self, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Append new positions; return keys and values of cached + new positions (before trimming)."""
        if self.keys is not None and self.values is not None:
            keys = torch.cat([self.keys, keys], dim=-2)
            values = torch.cat([self.values, values], dim=-2)
        length = keys.shape[-2]
        start = 0 if self.window is None else max(0, length - (self.window - 1))
        self.keys, self.values = keys[..., start:, :], values[..., start:, :]
        return keys, values


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention over the second-to-last axis of `(batch, length, dim)` tokens."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        *,
        causal: bool = False,
        window: int | None = None,
        cache: KVCache | None = None,
    ) -> Tensor:
        """x `(B, L, D)` -> `(B, L, D)`. With a cache, x holds the newest L positions only."""
        q, k, v = rearrange(self.qkv(x), "b l (three h d) -> three b h l d", three=3, h=self.num_heads)
        if cache is not None:
            k, v = cache.extend(k, v)  # (B, heads, L_cached + L, head_dim)
        q_len, k_len = q.shape[-2], k.shape[-2]
        dropout_p = self.dropout if self.training else 0.0
        if not causal:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
        elif q_len == k_len and (window is None or k_len <= window):
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        elif q_len == 1 and (window is None or k_len <= window):
            # A single newest query may see every position the cache returned: no mask needed.
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
        else:
            mask = causal_mask(q_len, k_len, window, x.device)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        out = rearrange(out, "b h l d -> b l (h d)")
        return self.proj_drop(self.proj(out))


class Mlp(nn.Module):
    """Transformer feed-forward: Linear -> GELU -> Linear, with dropout after each."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class DividedSpaceTimeBlock(nn.Module):
    """TimeSformer divided space-time block on `(B, T, N, D)` tokens (T frames, N patches per frame).

    `x + TemporalAttn(LN(x))` (each patch attends to the same patch in earlier frames; causal), then
    `x + SpatialAttn(LN(x))` (patches of one frame attend to each other), then `x + MLP(LN(x))`.
    Only the temporal attention mixes frames, so the block is causal in time; its cache holds the keys
    and values of earlier frames for every patch, which is all a new frame needs.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm_time = nn.LayerNorm(dim)
        self.attn_time = MultiHeadSelfAttention(dim, num_heads, dropout)
        self.norm_space = nn.LayerNorm(dim)
        self.attn_space = MultiHeadSelfAttention(dim, num_heads, dropout)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout)

    def forward(self, x: Tensor, *, window: int | None = None, cache: KVCache | None = None) -> Tensor:
        """x `(B, T, N, D)` -> `(B, T, N, D)`; with a cache, x holds only the newest T frames."""
        batch, num_patches = x.shape[0], x.shape[2]
        xt = rearrange(x, "b t n d -> (b n) t d")
        xt = xt + self.attn_time(self.norm_time(xt), causal=True, window=window, cache=cache)
        xs = rearrange(xt, "(b n) t d -> (b t) n d", b=batch, n=num_patches)
        xs = xs + self.attn_space(self.norm_space(xs))
        xs = xs + self.mlp(self.norm_mlp(xs))
        return rearrange(xs, "(b t) n d -> b t n d", b=batch)
