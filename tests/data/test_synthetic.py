"""Tests of the procedural `shapes` benchmark (vidyn.data.synthetic)."""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from vidyn.data import synthetic
from vidyn.data.synthetic import SHAPES_CLASSES, SPLITS, ShapesDataset, shapes
from vidyn.errors import VidynError
from vidyn.registry import DATASETS


def make(**kwargs: object) -> ShapesDataset:
    args: dict = {"num_samples": 28, "size": 32, "num_frames": 8}
    args.update(kwargs)
    return shapes(**args)


def blurred_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean |a - b| after a 9x9 box blur, so the distance keeps growing with displacements of several
    pixels instead of saturating once an object has left its own footprint."""
    return float(F.avg_pool2d(a - b, 9, stride=1, padding=4).abs().mean())


def test_builder_is_registered_and_checks_arguments() -> None:
    assert "shapes" in DATASETS.names(family="video")
    ds = DATASETS.build("shapes", split="val", num_samples=3, size=16)
    assert isinstance(ds, ShapesDataset) and len(ds) == 3 and ds.split == "val"
    assert ds.class_names == SHAPES_CLASSES and len(SHAPES_CLASSES) >= 6
    with pytest.raises(VidynError, match="valid arguments"):
        DATASETS.build("shapes", colour=True)


@pytest.mark.parametrize("channels,background", [(1, False), (3, True)])
def test_sample_contract(channels: int, background: bool) -> None:
    ds = make(channels=channels, background=background, num_frames=6, frame_interval=0.25)
    for i in (0, 5, 27):
        sample = ds[i]
        assert set(sample) == {"frames", "times", "label"}
        frames, times, label = sample["frames"], sample["times"], sample["label"]
        assert frames.shape == (6, channels, 32, 32) and frames.dtype == torch.float32
        assert 0.0 <= float(frames.min()) and float(frames.max()) <= 1.0
        assert times.dtype == torch.float32 and torch.allclose(times, torch.arange(6) * 0.25)
        assert label.dtype == torch.int64 and label.dim() == 0
        assert int(label) == i % len(SHAPES_CLASSES)
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["frames"].shape == (4, 6, channels, 32, 32) and batch["label"].tolist() == [0, 1, 2, 3]


def test_class_subset_labels() -> None:
    ds = make(classes=["spin", "gravity"])
    assert ds.class_names == ["spin", "gravity"]
    assert [int(ds[i]["label"]) for i in range(4)] == [0, 1, 0, 1]
    # Label 0 is spin: the objects rotate in place. Label 1 is gravity: they move.
    t = torch.linspace(0, 2, 9)
    spin, fall = ds.states(0, t), ds.states(1, t)
    assert torch.allclose(spin["centre"], spin["centre"][:, :1]) and not torch.allclose(
        spin["angle"], spin["angle"][:, :1]
    )
    assert not torch.allclose(fall["centre"], fall["centre"][:, :1])


def test_deterministic_per_seed_split_index() -> None:
    a, b = make(background=True), make(background=True)
    assert torch.equal(a[5]["frames"], a[5]["frames"]) and torch.equal(a[5]["frames"], b[5]["frames"])
    assert not torch.equal(a[5]["frames"], make(background=True, seed=1)[5]["frames"])
    assert not torch.equal(a[5]["frames"], a[12]["frames"])  # same class, another sample


def test_splits_are_disjoint() -> None:
    seen: dict[str, set[bytes]] = {}
    for split in SPLITS:
        ds = make(split=split, num_samples=300, size=16, num_frames=1)
        seen[split] = {ds[i]["frames"].numpy().tobytes() for i in range(len(ds))}
        assert len(seen[split]) == 300  # no repeated scenes within a split either
    assert not (seen["train"] & seen["val"]) and not (seen["train"] & seen["test"])
    assert not (seen["val"] & seen["test"])


def test_first_frame_does_not_depend_on_the_class() -> None:
    # Appearance and placement never see the label and every law starts from them, so frame 0 of a
    # given index is the same image whatever the class: a single frame cannot tell the class.
    t0 = torch.zeros(1)
    for i in range(6):
        firsts = [make(classes=[c], background=True).render(i, t0) for c in SHAPES_CLASSES]
        for other in firsts[1:]:
            torch.testing.assert_close(other, firsts[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("law", SHAPES_CLASSES)
def test_every_class_visibly_moves(law: str) -> None:
    # Plain objects on black is the hardest case (a spinning plain object shows only its outline).
    ds = make(classes=[law], num_samples=5, size=64, num_frames=20, textured=False, max_objects=1)
    for i in range(len(ds)):
        frames = ds[i]["frames"]
        change = (frames[1:] - frames[0]).abs().flatten(1)
        assert float(change.max()) > 0.3, (law, i)
        assert float(change.mean(1).max()) > 2e-3, (law, i)


@pytest.mark.parametrize("law", SHAPES_CLASSES)
def test_sub_frame_continuity(law: str) -> None:
    ds = make(classes=[law], num_samples=3, size=64, textured=True, background=True)
    for i in range(len(ds)):
        t = torch.tensor([0.7, 0.701], dtype=torch.float64)
        close = ds.render(i, t)
        assert float((close[1] - close[0]).abs().max()) < 0.1, (law, i)  # < 0.1 px of motion in 1 ms
        # Frames 0.5 s and 0.6 s of the 0.1 s grid, the sub-frame time between them and 8 later frames
        # (their median, as periodic laws come back near the middle frame a period later).
        times = torch.tensor([0.5, 0.55, 0.6] + [0.9 + 0.2 * k for k in range(8)])
        before, mid, after, *far = ds.render(i, times)
        near = (blurred_distance(mid, before), blurred_distance(mid, after))
        assert min(near) > 0, (law, i)  # ground truth exists between frames and differs from them
        farther = torch.tensor([blurred_distance(mid, f) for f in far]).median()
        assert max(near) < float(farther), (law, i, near, farther)


def test_render_reproduces_getitem_regular_and_irregular() -> None:
    for irregular in (False, True):
        ds = make(irregular=irregular, channels=3, background=True)
        for i in (0, 3, 9):
            sample = ds[i]
            assert torch.equal(ds.render(i, sample["times"]), sample["frames"])


def test_irregular_times() -> None:
    ds = make(irregular=True, num_frames=12, frame_interval=0.2)
    span = 11 * 0.2
    all_times = [ds[i]["times"] for i in range(10)]
    for times in all_times:
        assert times.shape == (12,) and times.dtype == torch.float32 and float(times[0]) == 0.0
        assert bool((times.diff() > 0).all()) and float(times[-1]) <= span + 1e-6
    assert not torch.allclose(all_times[0], all_times[1])
    assert not torch.allclose(all_times[0], torch.arange(12) * 0.2)
    assert torch.equal(ds.times(4), all_times[4])
    late = torch.cat([t[1:] for t in all_times])
    assert float(late.mean()) == pytest.approx(span / 2, abs=0.25)  # uniform on (0, span]


def test_irregular_times_keep_min_gap_and_default_is_unchanged() -> None:
    spaced = make(irregular=True, num_frames=12, frame_interval=0.2, min_gap=0.15)
    plain = make(irregular=True, num_frames=12, frame_interval=0.2)
    gaps = torch.stack([spaced.times(i) for i in range(28)]).diff(dim=1)
    assert float(gaps.min()) >= 0.15 - 1e-6 and float(gaps.max()) > 0.2  # spaced, still irregular
    assert all(float(spaced.times(i)[-1]) <= 11 * 0.2 + 1e-6 for i in range(28))
    # The same uniform draws, shifted: the k-th time gains k * min_gap over the shortened span.
    k = torch.arange(12)
    expected = plain.times(3) * (11 * 0.2 - 11 * 0.15) / (11 * 0.2) + k * 0.15
    torch.testing.assert_close(spaced.times(3), expected)
    with pytest.raises(VidynError, match="min_gap"):
        make(irregular=True, frame_interval=0.2, min_gap=0.2)


def test_grayscale_is_luminance_of_rgb() -> None:
    gray = make(channels=1, background=True)[3]["frames"]
    rgb = make(channels=3, background=True)[3]["frames"]
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    torch.testing.assert_close((rgb * luma).sum(1, keepdim=True), gray, atol=1e-5, rtol=0)
    assert float((rgb[:, 0] - rgb[:, 1]).abs().max()) > 0.05  # colour, not gray repeated


def test_windowed_painting_equals_full_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    ds = make(size=48, max_objects=3, channels=3, background=True, num_samples=14)
    t = torch.tensor([0.0, 0.33, 1.7, 8.2, 37.9])  # includes objects at walls and partly out of frame
    windowed = [ds.render(i, t) for i in range(len(ds))]
    monkeypatch.setattr(synthetic, "_paint", functools.partial(synthetic._paint, full_frame=True))
    for i in range(len(ds)):
        torch.testing.assert_close(ds.render(i, t), windowed[i], atol=1e-6, rtol=0)


def test_fold_is_a_triangle_wave() -> None:
    x = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.5, 3.5, -1.5, 4.0], dtype=torch.float64)
    expected = torch.tensor([0.0, 0.5, 1.0, 0.5, -0.5, -0.5, -0.5, 0.0], dtype=torch.float64)
    torch.testing.assert_close(synthetic._fold(x, 1.0), expected)


def _law_paths(law: str, t: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """Per-object ground-truth states of a few samples of `law`: dicts of centre (T, 2), angle, scale."""
    ds = make(classes=[law], max_objects=3)
    paths = []
    for i in range(4):
        states = ds.states(i, t)
        paths += [{k: v[j] for k, v in states.items()} for j in range(states["angle"].shape[0])]
    return paths


def _circle_residual(path: torch.Tensor) -> tuple[float, float]:
    """Fit a circle through three points of `path` (T, 2); return (radius, max |distance - radius|)."""
    (ax, ay), (bx, by), (cx, cy) = path[0], path[len(path) // 3], path[2 * len(path) // 3]
    d = 2 * (ax * (by - cy) + bx * (cy - ay) + cx * (ay - by))
    a2, b2, c2 = ax**2 + ay**2, bx**2 + by**2, cx**2 + cy**2
    centre = torch.stack(
        [
            (a2 * (by - cy) + b2 * (cy - ay) + c2 * (ay - by)) / d,
            (a2 * (cx - bx) + b2 * (ax - cx) + c2 * (bx - ax)) / d,
        ]
    )
    radius = (path - centre).norm(dim=1)
    return float(radius[0]), float((radius - radius[0]).abs().max())


def _oscillator_fit(s: torch.Tensor, dt: float) -> tuple[float, float, float]:
    """Least-squares fit of s'' = a s' + b s + c by central differences; return (a, b, relative residual)."""
    ds, dds = (s[2:] - s[:-2]) / (2 * dt), s.diff(n=2) / dt**2
    design = torch.stack([ds, s[1:-1], torch.ones_like(ds)], dim=1)
    coef = torch.linalg.lstsq(design, dds.unsqueeze(1)).solution.squeeze(1)
    residual = (design @ coef - dds).norm() / dds.norm()
    return float(coef[0]), float(coef[1]), float(residual)


T = torch.linspace(0.0, 4.0, 4001, dtype=torch.float64)
DT = 1e-3


def test_bounce_moves_straight_between_wall_reflections() -> None:
    for path in _law_paths("bounce", T):
        velocity = path["centre"].diff(dim=0) / DT  # (T-1, 2): each component only flips sign at a wall
        assert bool(torch.isclose(velocity.abs(), velocity[:1].abs(), atol=1e-6).float().mean() > 0.98)
        assert 0.8 <= float(velocity[0].norm()) <= 1.5
        assert float(path["centre"].abs().max()) <= 0.84 + 1e-9
        assert torch.all(path["angle"] == path["angle"][0]) and torch.all(path["scale"] == 1)


def test_orbit_is_uniform_circular_motion() -> None:
    for path in _law_paths("orbit", T):
        radius, error = _circle_residual(path["centre"])
        assert error < 1e-9 and 0.25 <= radius <= 0.45
        speed = path["centre"].diff(dim=0).norm(dim=1) / DT
        assert float(speed.max() - speed.min()) < 1e-6


def test_pendulum_swings_on_an_arc_and_turns_with_the_rod() -> None:
    for path in _law_paths("pendulum", T):
        radius, error = _circle_residual(path["centre"])
        assert error < 1e-9 and 0.35 <= radius <= 0.6
        damping, stiffness, residual = _oscillator_fit(path["angle"], DT)
        assert residual < 1e-5 and abs(damping) < 1e-3
        assert 2 * math.pi / 2.5 <= math.sqrt(-stiffness) <= 2 * math.pi / 1.2  # periods of 1.2-2.5 s


def test_spring_is_a_damped_oscillation_along_a_line() -> None:
    for path in _law_paths("spring", T):
        step = path["centre"] - path["centre"][0]
        axis = step[step.norm(dim=1).argmax()]
        axis = axis / axis.norm()
        assert float((step[:, 0] * axis[1] - step[:, 1] * axis[0]).abs().max()) < 1e-9  # collinear
        damping, stiffness, residual = _oscillator_fit(step @ axis, DT)
        assert residual < 1e-5 and -1.4 - 1e-3 <= damping <= -0.4 + 1e-3 and stiffness < 0  # gamma 0.2-0.7


def test_spin_and_pulse_stay_in_place() -> None:
    for path in _law_paths("spin", T):
        assert torch.all(path["centre"] == path["centre"][0]) and torch.all(path["scale"] == 1)
        rate = path["angle"].diff() / DT
        assert float(rate.max() - rate.min()) < 1e-6 and 2 * math.pi / 2.5 - 1e-6 <= abs(float(rate[0]))
    for path in _law_paths("pulse", T):
        assert torch.all(path["centre"] == path["centre"][0]) and torch.all(path["angle"] == path["angle"][0])
        assert float(path["scale"][0]) == 1.0 and float(path["scale"].max()) >= 1.3
        assert float(path["scale"].min()) <= 0.7


def test_gravity_falls_with_constant_acceleration_and_bounces() -> None:
    for path in _law_paths("gravity", T):
        height = path["centre"][:, 1]  # y points down
        accel = height.diff(n=2) / DT**2
        g = float(accel.median())
        assert 2.5 <= g <= 4.5
        assert float(((accel - g).abs() < 1e-3).float().mean()) > 0.97  # except around the bounces
        bounces = (accel < 0).nonzero().flatten()
        assert len(bounces) > 0 and float(height.max()) <= 0.84 + 1e-9 and float(height.min()) > -1.0


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"channels": 2}, "channels must be 1"),
        ({"classes": ["bounce", "wobble"]}, "bounce, orbit, pendulum"),
        ({"classes": []}, "classes must be distinct"),
        ({"classes": "spin"}, "list of names"),
        ({"classes": ["spin", "spin"]}, "classes must be distinct"),
        ({"split": "dev"}, "train, val, test"),
        ({"size": 4}, "size"),
        ({"num_frames": 0}, "num_frames"),
        ({"frame_interval": 0.0}, "frame_interval"),
        ({"frame_interval": math.nan}, "frame_interval"),
        ({"max_objects": 4}, "max_objects"),
        ({"num_samples": 0}, "num_samples"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(VidynError, match=match):
        make(**kwargs)


def test_bad_render_calls_raise() -> None:
    ds = make()
    with pytest.raises(VidynError, match="1-D float tensor"):
        ds.render(0, torch.zeros(2, 3))
    with pytest.raises(VidynError, match="1-D float tensor"):
        ds.render(0, torch.arange(3))
    with pytest.raises(VidynError, match="finite"):
        ds.render(0, torch.tensor([0.0, math.inf]))
    with pytest.raises(IndexError):
        ds[28]
