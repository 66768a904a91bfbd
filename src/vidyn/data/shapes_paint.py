"""Rasterising one object of the `shapes` benchmark (`vidyn.data.synthetic`): signed distance functions of
the five shape kinds, anti-aliased coverage and stripe/checker textures, composited into a frame in place.

Only a window around each object is evaluated (`_paint`); the result equals the full-frame computation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

_SQRT3 = math.sqrt(3.0)
_BOUND = 1.3  # every shape lies within 1.3 object-local units of its centre (ring: 1 + 0.25)


@dataclass(frozen=True)
class _Object:
    shape: str
    shape_args: tuple[float, float, float]
    radius: float  # circumradius in normalised units (image half-width = 1)
    colour: tuple[float, float, float]
    texture: str
    tex_freq: float  # radians per unit of object-local coordinates
    tex_contrast: float
    x0: float
    y0: float
    angle0: float
    motion: dict[str, float]


def _length(x: Tensor, y: Tensor) -> Tensor:
    return (x.square() + y.square()).sqrt()


def _sd_box(u: Tensor, v: Tensor, bx: float, by: float) -> Tensor:
    qx, qy = u.abs() - bx, v.abs() - by
    return _length(qx.clamp_min(0), qy.clamp_min(0)) + torch.maximum(qx, qy).clamp_max(0)


def _sd_ellipse(u: Tensor, v: Tensor, a: float, b: float) -> Tensor:
    # Quilez's approximation k0 (k0 - 1) / k1; the epsilon keeps the centre pixel finite and inside.
    k0 = (u.square() / a**2 + v.square() / b**2 + 1e-12).sqrt()
    k1 = (u.square() / a**4 + v.square() / b**4 + 1e-12).sqrt()
    return k0 * (k0 - 1.0) / k1


def _sd_triangle(u: Tensor, v: Tensor) -> Tensor:
    half_side = _SQRT3 / 2  # equilateral triangle of circumradius 1, centred on its centroid
    px, py = u.abs() - half_side, v + half_side / _SQRT3
    fold = px + _SQRT3 * py > 0
    px, py = torch.where(fold, 0.5 * (px - _SQRT3 * py), px), torch.where(fold, -0.5 * (_SQRT3 * px + py), py)
    px = px - px.clamp(-2 * half_side, 0.0)
    return -_length(px, py) * py.sign()


def _sdf(obj: _Object, u: Tensor, v: Tensor) -> Tensor:
    a, b, c = obj.shape_args
    if obj.shape == "ellipse":
        return _sd_ellipse(u, v, a, b)
    if obj.shape == "rectangle":
        return _sd_box(u, v, a, b)
    if obj.shape == "triangle":
        return _sd_triangle(u, v)
    if obj.shape == "cross":
        return torch.minimum(_sd_box(u, v, a, b), _sd_box(u, v, b, c))
    return _sd_ellipse(u, v, a, b).abs_().sub_(c)  # ring


def _aa_pattern(edge: Tensor, pixel: Tensor | float) -> Tensor:
    """Anti-aliased 0/1 pattern from an approximate signed distance `edge` to its boundaries."""
    return (edge / pixel).add_(0.5).clamp_(0.0, 1.0)


def _paint(
    img: Tensor,
    obj: _Object,
    state: tuple[Tensor, Tensor, Tensor, Tensor],
    colour: Tensor,
    coords: Tensor,
    full_frame: bool = False,
) -> None:
    """Composite `obj` in place over `img` (T, C, H, W) at its per-frame `state` (cx, cy, angle, scale).

    Only a square window of w x w pixels per frame that holds the object (its bounding circle plus 1.5 px
    of anti-aliasing) is evaluated, gathered from and scattered back to `img`: the pixels outside have zero
    coverage, so this equals the full-frame computation (`full_frame=True`) at a fraction of its cost. A
    window start clamped into the image still holds every visible pixel of a partly outside object.
    """
    n, channels, size = img.shape[0], img.shape[1], img.shape[-1]
    cx, cy, angle, scale = state
    pixel = 2.0 / size  # one pixel in normalised image units
    extent = obj.radius * scale  # normalised units per object-local unit, (T,)
    half = math.ceil(_BOUND * float(extent.max()) / pixel)
    w = size if full_frame else min(2 * half + 4, size)
    offsets = torch.arange(w)

    def window(centre: Tensor) -> Tensor:  # (T,) normalised centre -> (T, w) pixel indices
        start = ((centre + 1.0) / pixel - 0.5).floor().long() - (half + 1)
        return start.clamp(0, size - w).unsqueeze(1) + offsets

    rows, cols = window(cy), window(cx)
    cos = (angle.cos() / extent).float().view(n, 1, 1)
    sin = (angle.sin() / extent).float().view(n, 1, 1)
    dx = (coords[cols] - cx.float().unsqueeze(1)).view(n, 1, w)  # (T, 1, w)
    dy = (coords[rows] - cy.float().unsqueeze(1)).view(n, w, 1)  # (T, w, 1)
    u, v = dx * cos + dy * sin, dy * cos - dx * sin  # object-local coordinates, (T, w, w)
    local_pixel = (pixel / extent).float().view(n, 1, 1)
    alpha = _aa_pattern(_sdf(obj, u, v).neg_(), local_pixel)  # coverage, (T, w, w)
    if obj.texture == "plain":
        target = colour.view(1, channels, 1).expand(n, channels, w * w)
    else:
        edge = (u * obj.tex_freq).sin_()
        if obj.texture == "checker":
            edge.mul_((v * obj.tex_freq).sin_())
        # sin(k u) / k is ~ the signed distance to the nearest stripe edge, in local units.
        shade = _aa_pattern(edge.div_(obj.tex_freq), local_pixel).mul_(-obj.tex_contrast).add_(1.0)
        target = shade.view(n, 1, w * w) * colour.view(1, channels, 1)  # (T, C, w*w)
    flat = img.view(n, channels, size * size)
    index = (rows.unsqueeze(2) * size + cols.unsqueeze(1)).view(n, 1, w * w).expand(n, channels, w * w)
    patch = flat.gather(2, index).lerp_(target, alpha.view(n, 1, w * w))  # (T, C, w*w)
    flat.scatter_(2, index, patch)
