"""``shapes``: vidyn's embedded, procedural, continuous-time video benchmark.

A scene holds 1-3 anti-aliased objects (ellipse, rectangle, triangle, cross or elliptical ring; random size,
colour and optional stripes/checker texture in object-local coordinates) over a black or textured static
background. Every object follows the scene's **motion law**, which is the class label:

    bounce    straight motion with wall reflections (triangle-wave folding of linear motion)
    orbit     uniform circular motion around a centre
    pendulum  a rigid pendulum about a pivot above the object (the object turns with the rod); its angle
              follows the harmonic small-angle solution, so the period does not grow with amplitude
    spring    damped harmonic oscillation along a line, decaying to rest
    spin      rotation in place
    pulse     sinusoidal scaling in place
    gravity   free fall with elastic bounces on the floor (periodic parabolic arcs) plus wall folding

Appearance, the number of objects and their placement at t = 0 come from a random stream that never sees
the label, and every law starts from that placement (position, orientation and scale at t = 0 are the drawn
ones), so frame 0 of a sample is the same whatever its class: one frame cannot tell the class.

Object states (centre, rotation, scale) are closed-form functions of time, so a sample can be rendered at
any float timestamp: between frames, beyond the last frame, or on an irregular grid. Rendering is vectorised
over time and pixels: each object is a 2-D signed distance function (the exact box/triangle distances and
the ellipse approximation from Inigo Quilez's catalogue of 2-D SDFs), anti-aliased by clamping the distance
in pixels over one pixel. Grayscale is the Rec. 601 luminance (0.299 R + 0.587 G + 0.114 B) of the RGB
scene; compositing is linear in colour, so it is computed directly on luminances.

Samples are deterministic per (seed, split, index): each draws from `random.Random` generators seeded by a
BLAKE2 hash of those values (never the global RNG), and the split name in the hash keeps train/val/test
disjoint. This is not a published dataset; it plays the role of Moving MNIST (Srivastava et al., 2015) and
bouncing balls (Sutskever et al., 2008) with labelled, continuous-time dynamics. Rasterising an object
(signed distances, anti-aliasing, textures) lives in `vidyn.data.shapes_paint`.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset

from vidyn.data.shapes_paint import _aa_pattern, _Object, _paint
from vidyn.errors import VidynError
from vidyn.registry import DATASETS

SHAPES_CLASSES: list[str] = ["bounce", "orbit", "pendulum", "spring", "spin", "pulse", "gravity"]
SPLITS: tuple[str, ...] = ("train", "val", "test")
MAX_OBJECTS = 3

_SHAPE_KINDS = ("ellipse", "rectangle", "triangle", "cross", "ring")
_TEXTURES = ("plain", "stripes", "checker")
_LUMA = (0.299, 0.587, 0.114)  # Rec. 601 weights, as PIL's "L" mode and OpenCV use
_PLACEMENT = 0.6  # every class starts its objects uniformly in [-0.6, 0.6]^2 (image = [-1, 1]^2)


@dataclass(frozen=True)
class _Background:
    colour: tuple[float, float, float]
    pattern: str
    freq: float
    angle: float
    contrast: float


def _luma(rgb: tuple[float, ...] | list[float]) -> float:
    return sum(w * c for w, c in zip(_LUMA, rgb, strict=True))


def _rng(seed: int, split: str, index: int, stream: str) -> random.Random:
    key = f"vidyn.shapes/{seed}/{split}/{index}/{stream}".encode()
    return random.Random(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little"))


def _draw_appearance(rng: random.Random, max_objects: int) -> tuple[_Background, list[dict]]:
    bg = _Background(
        colour=(rng.uniform(0.05, 0.3), rng.uniform(0.05, 0.3), rng.uniform(0.05, 0.3)),
        pattern=rng.choice(("stripes", "checker", "gradient")),
        freq=rng.uniform(8.0, 20.0),
        angle=rng.uniform(0.0, math.pi),
        contrast=rng.uniform(0.3, 0.5),
    )
    objects = []
    for _ in range(rng.randint(1, max_objects)):
        shape = rng.choice(_SHAPE_KINDS)
        # Every candidate's arguments are drawn (dict values evaluate eagerly), so each object consumes
        # the same number of draws whatever its shape.
        args = {
            "ellipse": (1.0, rng.uniform(0.5, 0.75), 0.0),
            "rectangle": (0.8, 0.8 * rng.uniform(0.5, 0.9), 0.0),
            "triangle": (0.0, 0.0, 0.0),
            "cross": (1.0, rng.uniform(0.28, 0.4), rng.uniform(0.55, 0.85)),
            "ring": (1.0, rng.uniform(0.55, 0.8), rng.uniform(0.15, 0.25)),
        }[shape]
        rgb = [rng.random() for _ in range(3)]
        # Lift dark colours so objects stay visible in grayscale and over the (dark) background.
        lift = max(0.0, 0.45 - _luma(rgb))
        objects.append(
            dict(
                shape=shape,
                shape_args=args,
                radius=rng.uniform(0.16, 0.28),
                colour=tuple(min(1.0, c + lift) for c in rgb),
                texture=rng.choice(_TEXTURES),
                tex_freq=2 * math.pi / rng.uniform(0.7, 1.1),
                tex_contrast=rng.uniform(0.4, 0.7),
                x0=rng.uniform(-_PLACEMENT, _PLACEMENT),
                y0=rng.uniform(-_PLACEMENT, _PLACEMENT),
                angle0=rng.uniform(0.0, 2 * math.pi),
            )
        )
    return bg, objects


def _draw_motion(rng: random.Random, law: str, obj: dict) -> dict[str, float]:
    """Per-object parameters of `law`: periods of ~1-3 s, speeds of ~2-7 px per 0.1 s at 64 px."""
    x0, y0, wall = obj["x0"], obj["y0"], 1.0 - obj["radius"]  # centres stay within +-wall
    out = math.atan2(y0, x0)  # direction from the image centre to the object
    jitter, sign, tau = math.pi / 4, rng.choice((-1.0, 1.0)), 2 * math.pi
    if law == "bounce":
        speed, heading = rng.uniform(0.8, 1.5), rng.uniform(0.0, tau)
        return dict(vx=speed * math.cos(heading), vy=speed * math.sin(heading), wall=wall)
    if law == "orbit":  # start on the outer side of the centre so the circle stays in frame
        theta0 = out + rng.uniform(-jitter, jitter)
        return dict(r=rng.uniform(0.25, 0.45), theta0=theta0, omega=sign * tau / rng.uniform(1.2, 3.0))
    if law == "pendulum":  # start on the side of the swing nearest the object's side of the image
        phase = sign * math.acos(math.copysign(rng.uniform(0.2, 1.0), x0))
        omega = tau / rng.uniform(1.2, 2.5)
        return dict(length=rng.uniform(0.35, 0.6), amp=rng.uniform(0.5, 0.9), phase=phase, omega=omega)
    if law == "spring":  # displaced outwards from an equilibrium nearer the image centre
        direction, omega = out + rng.uniform(-jitter, jitter), tau / rng.uniform(1.0, 2.0)
        return dict(amp=rng.uniform(0.25, 0.45), dir=direction, omega=omega, gamma=rng.uniform(0.2, 0.7))
    if law == "spin":
        return dict(omega=sign * tau / rng.uniform(1.0, 2.5))
    if law == "pulse":
        return dict(amp=rng.uniform(0.3, 0.5), omega=sign * tau / rng.uniform(1.0, 2.5))
    if law == "gravity":  # the floor is the bottom wall; apex heights keep the object in frame
        h0 = wall - y0  # height above the floor at t = 0
        apex, g = rng.uniform(max(h0, 0.6), 2 * wall - 0.1), rng.uniform(2.5, 4.5)
        u0 = sign * math.sqrt(2 * g * max(apex - h0, 0.0))  # upward speed at t = 0
        return dict(g=g, apex=apex, u0=u0, vx=rng.uniform(-0.4, 0.4), wall=wall)
    raise AssertionError(f"unhandled motion law {law}")


def _fold(x: Tensor, wall: float) -> Tensor:
    """Reflect `x` into [-wall, wall]: the triangle wave of period 4*wall, equal to x inside the walls."""
    return wall - (torch.remainder(x + wall, 4 * wall) - 2 * wall).abs()


def _motion(law: str, obj: _Object, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Closed-form (centre x, centre y, rotation, scale) at float64 times `t` (T,), each (T,)."""
    m, x0, y0 = obj.motion, obj.x0, obj.y0
    cx, cy = torch.full_like(t, x0), torch.full_like(t, y0)
    angle, scale = torch.full_like(t, obj.angle0), torch.ones_like(t)
    if law == "bounce":
        cx, cy = _fold(x0 + m["vx"] * t, m["wall"]), _fold(y0 + m["vy"] * t, m["wall"])
    elif law == "orbit":
        theta = m["theta0"] + m["omega"] * t
        cx = x0 + m["r"] * (theta.cos() - math.cos(m["theta0"]))
        cy = y0 + m["r"] * (theta.sin() - math.sin(m["theta0"]))
    elif law == "pendulum":
        theta = m["amp"] * torch.cos(m["omega"] * t + m["phase"])
        theta_0 = m["amp"] * math.cos(m["phase"])
        # y points down, so the object hangs at pivot + length * (sin, cos); the rod direction turns by
        # -theta in image coordinates and the rigid object turns with it.
        cx = x0 + m["length"] * (theta.sin() - math.sin(theta_0))
        cy = y0 + m["length"] * (theta.cos() - math.cos(theta_0))
        angle = obj.angle0 - (theta - theta_0)
    elif law == "spring":
        offset = m["amp"] * (torch.exp(-m["gamma"] * t) * torch.cos(m["omega"] * t) - 1.0)
        cx, cy = x0 + offset * math.cos(m["dir"]), y0 + offset * math.sin(m["dir"])
    elif law == "spin":
        angle = obj.angle0 + m["omega"] * t
    elif law == "pulse":
        scale = 1.0 + m["amp"] * torch.sin(m["omega"] * t)
    elif law == "gravity":
        # Elastic bounces: height = apex - g tau^2 / 2 with tau the time from the nearest apex, wrapped
        # with the flight time of one arc.
        half = math.sqrt(2 * m["apex"] / m["g"])
        tau = torch.remainder(t - m["u0"] / m["g"] + half, 2 * half) - half
        cy = m["wall"] - (m["apex"] - 0.5 * m["g"] * tau.square())
        cx = _fold(x0 + m["vx"] * t, m["wall"])
    return cx, cy, angle, scale


@dataclass(frozen=True)
class _Scene:
    law: str
    background: _Background
    objects: list[_Object]


class ShapesDataset(Dataset):
    """Procedural videos of moving shapes labelled by their motion law (see the module docstring).

    `__getitem__(i)` returns {"frames": (T, C, H, W) float32 in [0, 1], "times": (T,) float32 seconds,
    "label": int64 scalar}; `render(i, times)` draws sample i at any float timestamps and `states(i, times)`
    gives its ground-truth object states. Labels index `class_names` (balanced: label = index % classes).
    Arguments and their defaults are documented on the registered builder `shapes`.
    """

    def __init__(
        self,
        *,
        split: str,
        num_samples: int,
        size: int,
        channels: int,
        num_frames: int,
        frame_interval: float,
        irregular: bool,
        max_objects: int,
        textured: bool,
        background: bool,
        classes: list[str] | None,
        seed: int,
        min_gap: float = 0.0,
    ) -> None:
        if isinstance(classes, str):
            raise VidynError(f"shapes: classes must be a list of names, e.g. [{classes!r}], not a string")
        names = list(SHAPES_CLASSES) if classes is None else list(classes)
        checks = [
            (split in SPLITS, f"unknown split {split!r}; use one of {', '.join(SPLITS)}"),
            (num_samples >= 1, f"num_samples must be >= 1, got {num_samples}"),
            (size >= 8, f"size must be at least 8 pixels, got {size}"),
            (channels in (1, 3), f"channels must be 1 (grayscale) or 3 (RGB), got {channels}"),
            (num_frames >= 1, f"num_frames must be >= 1, got {num_frames}"),
            (0 < frame_interval < math.inf, f"frame_interval must be positive seconds, got {frame_interval}"),
            (0 <= min_gap < frame_interval, f"min_gap must be in [0, frame_interval) seconds, got {min_gap}"),
            (1 <= max_objects <= MAX_OBJECTS, f"max_objects must be in 1..{MAX_OBJECTS}, got {max_objects}"),
            (
                bool(names) and len(set(names)) == len(names) and set(names) <= set(SHAPES_CLASSES),
                f"classes must be distinct names among {', '.join(SHAPES_CLASSES)}; got {names}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise VidynError(f"shapes: {message}")
        self.split, self.num_samples, self.size, self.channels = split, num_samples, size, channels
        self.num_frames, self.frame_interval, self.irregular = num_frames, float(frame_interval), irregular
        self.max_objects, self.textured, self.background = max_objects, textured, background
        self.min_gap = float(min_gap)
        self.class_names: list[str] = names
        self.seed = seed
        self._coords = (torch.arange(size, dtype=torch.float32) * 2 + 1) / size - 1  # pixel centres

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        times = self.times(index)
        return {"frames": self.render(index, times), "times": times, "label": torch.tensor(self.label(index))}

    def _check_index(self, index: int) -> int:
        if not -self.num_samples <= index < self.num_samples:
            raise IndexError(f"shapes: index {index} out of range for {self.num_samples} samples")
        return index % self.num_samples

    def label(self, index: int) -> int:
        """The class of sample `index` (an index into `class_names`)."""
        return self._check_index(index) % len(self.class_names)

    def times(self, index: int) -> Tensor:
        """The sample's timestamps (T,) float32: a regular grid or, if `irregular`, t_0 = 0 and sorted
        uniform draws in (0, (num_frames - 1) * frame_interval] whose consecutive gaps are >= `min_gap`
        (uniform among such sets: the order statistics of a span shortened by the gaps, then spread)."""
        index = self._check_index(index)
        span = (self.num_frames - 1) * self.frame_interval
        if not self.irregular:
            return (torch.arange(self.num_frames, dtype=torch.float64) * self.frame_interval).float()
        rng = _rng(self.seed, self.split, index, "times")
        free = span - (self.num_frames - 1) * self.min_gap
        later = sorted(free * (1.0 - rng.random()) for _ in range(self.num_frames - 1))
        later = [t + (i + 1) * self.min_gap for i, t in enumerate(later)]
        return torch.tensor([0.0, *later], dtype=torch.float32)

    def _scene(self, index: int) -> _Scene:
        index = self._check_index(index)
        law = self.class_names[self.label(index)]
        # Appearance and placement never see the label; motion parameters have their own stream.
        bg, drawn = _draw_appearance(_rng(self.seed, self.split, index, "scene"), self.max_objects)
        motion_rng = _rng(self.seed, self.split, index, f"motion/{law}")
        objects = []
        for obj in drawn:
            obj["motion"] = _draw_motion(motion_rng, law, obj)
            if not self.textured:
                obj["texture"] = "plain"
            objects.append(_Object(**obj))
        return _Scene(law, bg, objects)

    def states(self, index: int, times: Tensor) -> dict[str, Tensor]:
        """Ground truth at `times` (T,): "centre" (N, T, 2) as (x, y) in [-1, 1] image units (y down),
        "angle" (N, T) radians and "scale" (N, T) for the sample's N objects, in float64."""
        scene, t = self._scene(index), _check_times(times)
        per_object = [_motion(scene.law, obj, t) for obj in scene.objects]
        return {
            "centre": torch.stack([torch.stack([cx, cy], dim=-1) for cx, cy, _, _ in per_object]),
            "angle": torch.stack([s[2] for s in per_object]),
            "scale": torch.stack([s[3] for s in per_object]),
        }

    def render(self, index: int, times: Tensor) -> Tensor:
        """Draw sample `index` at float timestamps `times` (T,) seconds -> (T, C, H, W) float32 in [0, 1]."""
        scene, t = self._scene(index), _check_times(times)
        img = self._background(scene.background).expand(t.shape[0], -1, -1, -1).clone()  # (T, C, H, W)
        for obj in scene.objects:
            _paint(img, obj, _motion(scene.law, obj, t), self._colour(obj.colour), self._coords)
        return img.clamp_(0.0, 1.0)

    def _colour(self, rgb: tuple[float, float, float]) -> Tensor:
        if self.channels == 1:
            return torch.tensor([_luma(rgb)], dtype=torch.float32)
        return torch.tensor(rgb, dtype=torch.float32)

    def _background(self, bg: _Background) -> Tensor:
        """The static background (C, H, W): black, or a dark colour modulated by an anti-aliased pattern."""
        size, coords = self.size, self._coords
        if not self.background:
            return torch.zeros(self.channels, size, size)
        x, y = coords.view(1, size), coords.view(size, 1)
        u = x * math.cos(bg.angle) + y * math.sin(bg.angle)  # (H, W)
        if bg.pattern == "gradient":
            pattern = u * (0.5 / math.sqrt(2)) + 0.5
        else:
            edge = torch.sin(u * bg.freq)
            if bg.pattern == "checker":
                edge = edge * torch.sin((y * math.cos(bg.angle) - x * math.sin(bg.angle)) * bg.freq)
            pattern = _aa_pattern(edge / bg.freq, 2.0 / size)
        shade = 1.0 + bg.contrast * (2 * pattern - 1)  # (H, W) in [1 - contrast, 1 + contrast]
        return self._colour(bg.colour).view(-1, 1, 1) * shade


def _check_times(times: Tensor) -> Tensor:
    if not isinstance(times, Tensor) or times.dim() != 1 or not times.is_floating_point():
        raise VidynError("shapes: times must be a 1-D float tensor of seconds, e.g. torch.linspace(0, 2, 21)")
    if not torch.isfinite(times).all():
        raise VidynError("shapes: times must be finite numbers of seconds")
    return times.detach().to(device="cpu", dtype=torch.float64)


@DATASETS.register("shapes", family="video")
def shapes(
    split: str = "train",
    num_samples: int = 1000,
    size: int = 64,
    channels: int = 1,
    num_frames: int = 20,
    frame_interval: float = 0.1,
    irregular: bool = False,
    max_objects: int = 2,
    textured: bool = True,
    background: bool = False,
    classes: list[str] | None = None,
    seed: int = 0,
    min_gap: float = 0.0,
) -> ShapesDataset:
    """Procedural moving-shapes videos labelled by motion law, renderable at any float timestamp.

    `size` is H = W in pixels; `channels` 1 (Rec. 601 luminance) or 3 (RGB); `num_frames` frames
    `frame_interval` seconds apart, or, with `irregular`, t_0 = 0 and sorted uniform times in
    (0, (num_frames - 1) * frame_interval] at least `min_gap` seconds apart; 1..`max_objects` objects per
    scene; `textured` gives objects stripes/checkers, `background` a static textured background; `classes`
    selects a subset of `SHAPES_CLASSES` (labels index that subset); samples are deterministic per
    (`seed`, `split`, index).
    """
    return ShapesDataset(
        split=split,
        num_samples=num_samples,
        size=size,
        channels=channels,
        num_frames=num_frames,
        frame_interval=frame_interval,
        irregular=irregular,
        max_objects=max_objects,
        textured=textured,
        background=background,
        classes=classes,
        seed=seed,
        min_gap=min_gap,
    )
