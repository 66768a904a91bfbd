"""Space-to-depth patching of frames, as PredRNN and OpenSTL's recurrent models use it.

`patchify` folds every non-overlapping p x p block of pixels into channels, so a 64x64x1 frame with
p = 4 becomes 16x16x16: the recurrent cells then run at a quarter of the resolution with a 4x wider
receptive field. The channel order is (p1 p2 c), the order of PredRNN's `reshape_patch`
(channels-last `(H/p, p, W/p, p, C) -> (H/p, W/p, p, p, C)`), so weights trained with the official code
index channels the same way.
"""

from __future__ import annotations

from einops import rearrange
from torch import Tensor


def patchify(frames: Tensor, patch_size: int) -> Tensor:
    """`(..., C, H, W) -> (..., p*p*C, H/p, W/p)`; H and W must be divisible by `patch_size`."""
    if patch_size == 1:
        return frames
    height, width = frames.shape[-2:]
    if height % patch_size or width % patch_size:
        raise ValueError(f"frame size {height}x{width} is not divisible by patch_size {patch_size}")
    return rearrange(frames, "... c (h p1) (w p2) -> ... (p1 p2 c) h w", p1=patch_size, p2=patch_size)


def unpatchify(patches: Tensor, patch_size: int) -> Tensor:
    """Inverse of `patchify`: `(..., p*p*C, H/p, W/p) -> (..., C, H, W)`."""
    if patch_size == 1:
        return patches
    if patches.shape[-3] % (patch_size * patch_size):
        raise ValueError(
            f"{patches.shape[-3]} channels are not a multiple of patch_size**2 = {patch_size**2}"
        )
    return rearrange(patches, "... (p1 p2 c) h w -> ... c (h p1) (w p2)", p1=patch_size, p2=patch_size)
