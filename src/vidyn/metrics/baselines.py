"""Reference clip sets for generation metrics: still-frame and shuffled-frame versions of real clips.

A generation metric is reported beside three baselines built from real data (issue #11):

- **real vs real**: two disjoint halves of the real data; the floor a generator can reach at this N;
- **still frame**: each real clip's first frame held for the whole clip (perfect appearance, no motion);
- **shuffled frames**: each real clip with its frames in a random order (the right frames, broken dynamics).

A metric that does not put real < still and real < shuffled is not measuring dynamics. The clip sets for
`shapes` are rendered by `vidyn.api.baselines`; the transforms here work on any clips `(B, T, C, H, W)`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vidyn.errors import VidynError


def _check_clips(clips: Tensor) -> None:
    if clips.dim() != 5 or clips.shape[1] < 2:
        raise VidynError(f"expected clips (B, T, C, H, W) with T >= 2, got {tuple(clips.shape)}")


def still_frame(clips: Tensor) -> Tensor:
    """Each clip's first frame held for all T frames: `(B, T, C, H, W)` -> same shape (a copy)."""
    _check_clips(clips)
    return clips[:, :1].expand_as(clips).clone()  # (B, 1, C, H, W) -> (B, T, C, H, W)


def shuffled_frames(clips: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Each clip's frames in an independent uniformly random order other than the identity.

    A permutation equal to the identity (probability 1/T!) is replaced by a rotation by one frame, so
    every clip's order is broken; frames themselves are untouched.
    """
    _check_clips(clips)
    b, t = clips.shape[:2]
    order = torch.argsort(torch.rand(b, t, generator=generator), dim=1)  # (B, T) a permutation per clip
    identity = (order == torch.arange(t)).all(dim=1)
    order[identity] = torch.roll(torch.arange(t), 1)
    index = order.to(clips.device).view(b, t, 1, 1, 1).expand_as(clips)
    return torch.gather(clips, 1, index)
