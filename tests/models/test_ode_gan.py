"""ode_gan generator: the Generator contract, continuous time, conditioning, solvers and export."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch

import vidyn
import vidyn.models.ode_gan  # noqa: F401  (registers ode_gan and ode_gan_tiny)
from vidyn.errors import VidynError
from vidyn.models.interface import Condition, Generator

TIMES = torch.arange(6, dtype=torch.float32) * 0.1


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models: one thread is faster, and far faster when other processes share the two cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return vidyn.build_model("ode_gan_tiny", **kw).eval()


def _seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_sample_contract() -> None:
    model = _model()
    assert isinstance(model, Generator) and model.continuous_time
    assert (model.num_classes, model.in_channels, model.image_size) == (0, 3, 16)
    with torch.no_grad():
        a = model.sample(3, TIMES, generator=_seeded(1))
        b = model.sample(3, TIMES, generator=_seeded(1))
        c = model.sample(3, TIMES, generator=_seeded(2))
    assert a.shape == (3, 6, 3, 16, 16) and a.dtype == torch.float32
    assert 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, b)
    assert (a - c).abs().mean() > 1e-3
    assert model.nfe > 0


def test_forward_takes_explicit_noise() -> None:
    model = _model()
    z = model.noise(2, _seeded(3))
    assert z.shape == (2, model.noise_dim)
    with torch.no_grad():
        torch.testing.assert_close(model(z, TIMES), model.sample(2, TIMES, generator=_seeded(3)))
    with pytest.raises(VidynError, match="noise"):
        model(torch.zeros(2, 3), TIMES)


DECODINGS = [
    {},
    {"warp_frames": True},
    {"warp_frames": True, "motion_regions": 2},
    {"warp_frames": True, "motion_regions": 1, "region_transform": "similarity"},
    {"warp_frames": True, "motion_regions": 1, "relative_flow": True},
]
DECODING_IDS = ["pixels", "warp", "regions", "similar", "relative"]


@pytest.mark.parametrize("decoding", DECODINGS, ids=DECODING_IDS)
def test_batched_irregular_and_shifted_times(decoding: dict) -> None:
    model = _model(**decoding)
    z = model.noise(2, _seeded(4))
    irregular = torch.tensor([[0.0, 0.03, 0.2, 0.21, 0.5], [0.0, 0.1, 0.15, 0.4, 0.9]])
    with torch.no_grad():
        both = model(z, irregular)
        alone = [model(z[i : i + 1], irregular[i]) for i in range(2)]
        shared = model(z, TIMES)
        shared_as_rows = model(z, TIMES.expand(2, -1))
        shifted = model(z, TIMES + 5.0)  # times count from each clip's first timestamp
        perm = torch.tensor([3, 0, 5, 1, 4, 2])
        permuted = model(z, TIMES[perm])
    assert both.shape == (2, 5, 3, 16, 16)
    for i in range(2):  # each row gets the clip it would get alone
        torch.testing.assert_close(both[i], alone[i][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(shared_as_rows, shared, atol=1e-5, rtol=0)
    torch.testing.assert_close(shifted, shared, atol=1e-5, rtol=0)
    torch.testing.assert_close(permuted, shared[:, perm], atol=1e-5, rtol=0)
    with torch.no_grad():
        repeated = model(z, torch.tensor([0.0, 0.1, 0.1, 0.3]))
        prefix = model(z, torch.tensor([0.0, 0.3]))  # frame 0.3 alone, with only the clip start beside it
    torch.testing.assert_close(repeated[:, 1], repeated[:, 2])
    torch.testing.assert_close(repeated[:, 3], prefix[:, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(repeated[:, 3], shared[:, 3], atol=1e-5, rtol=0)
    with pytest.raises(VidynError, match="shape"):
        model(z, torch.zeros(3, 4))
    with pytest.raises(VidynError, match="finite"):
        model(z, torch.tensor([0.0, float("nan")]))


@pytest.mark.parametrize("decoding", DECODINGS, ids=DECODING_IDS)
def test_double_frame_rate_gives_same_frames_at_shared_times(decoding: dict) -> None:
    """A frame depends on its own time (and, warping, on the clip's start) only: the 2x-rate clip contains
    the 1x-rate clip, and each new frame lies between its neighbours (close to their blend)."""
    model = _model(**decoding)
    z = model.noise(2, _seeded(5))
    dense = torch.stack([TIMES, TIMES + 0.05], dim=1).flatten()[:-1]  # 0, 0.05, 0.1, ..., 0.5
    with torch.no_grad():
        slow, fast = model(z, TIMES), model(z, dense)
        sparse = model(z, TIMES[::2])  # every other frame: 0.2 s apart
    torch.testing.assert_close(fast[:, ::2], slow, atol=1e-5, rtol=0)
    torch.testing.assert_close(sparse, slow[:, ::2], atol=1e-5, rtol=0)
    before, mid, after = fast[:, 0:-1:2], fast[:, 1::2], fast[:, 2::2]
    change = (after - before).abs().mean()
    assert change > 0
    assert (mid - (before + after) / 2).abs().mean() < 0.25 * change
    lo, hi = torch.minimum(before, after) - 1e-5, torch.maximum(before, after) + 1e-5
    assert ((mid >= lo) & (mid <= hi)).float().mean() > 0.75


def test_frame_by_frame_decoder_and_adaptive_solver() -> None:
    model = _model(temporal_blocks=0)
    with torch.no_grad():
        assert model.sample(1, TIMES, generator=_seeded()).shape == (1, 6, 3, 16, 16)
    rk4, dopri = _model(), _model(method="dopri5", rtol=1e-6, atol=1e-7)
    z = rk4.noise(2, _seeded(6))
    with torch.no_grad():
        torch.testing.assert_close(dopri(z, TIMES), rk4(z, TIMES), atol=1e-4, rtol=0)
    assert dopri.nfe > 0


def test_adjoint_gives_the_same_gradients() -> None:
    plain, adjoint = _model(), _model(adjoint=True)
    z = plain.noise(2, _seeded(7))
    grads = []
    for model in (plain, adjoint):
        model.zero_grad()
        model(z, TIMES[:3]).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.func.parameters()]))
    torch.testing.assert_close(grads[1], grads[0], atol=1e-5, rtol=1e-3)


def test_class_conditioning() -> None:
    model = _model(num_classes=3)
    z = model.noise(3, _seeded(8))
    with torch.no_grad():
        by_class = [model(z, TIMES, torch.full((3,), c)) for c in range(3)]
        null = model(z, TIMES, torch.full((3,), -1))
        unlabelled = model(z, TIMES)
        broadcast = model.sample(
            3, TIMES, condition=Condition(labels=torch.tensor([2])), generator=_seeded(8)
        )
    assert (by_class[0] - by_class[1]).abs().mean() > 1e-4
    assert (by_class[0] - null).abs().mean() > 1e-4
    torch.testing.assert_close(unlabelled, null)
    torch.testing.assert_close(broadcast, by_class[2])
    with pytest.raises(VidynError, match="0..2 or -1"):
        model(z, TIMES, torch.tensor([0, 3, -1]))
    with pytest.raises(VidynError, match="int64"):
        model(z, TIMES, torch.zeros(3))
    with pytest.raises(VidynError, match="frames"):
        model.sample(3, TIMES, condition=Condition(frames=torch.zeros(3, 2, 3, 16, 16)))
    unconditional = _model()
    with torch.no_grad():
        unconditional.sample(2, TIMES, condition=Condition(labels=torch.tensor([-1, -1])))
    with pytest.raises(VidynError, match="unconditional"):
        unconditional.sample(2, TIMES, condition=Condition(labels=torch.tensor([0, 1])))


@pytest.mark.parametrize("decoding", DECODINGS, ids=DECODING_IDS)
def test_gradient_reaches_every_parameter(decoding: dict) -> None:
    model = _model(num_classes=2, **decoding).train()
    z = model.noise(2, _seeded(9))
    model(z, TIMES[:4], torch.tensor([0, -1])).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def _set_head(model: torch.nn.Module, flow: tuple[float, float], mask_bias: float) -> None:
    """Make the warp head's flow a constant (x, y) pixel shift and its mask sigmoid(mask_bias)."""
    conv, c = model.head[-1], model.in_channels
    with torch.no_grad():
        conv.weight[c:] = 0
        conv.bias[c : c + 2] = torch.tensor(flow) / (model.image_size / 16)
        conv.bias[c + 2] = mask_bias


def _warp_and_plain(**kw) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A warping generator and the plain one with the same weights (its head: the image channels only)."""
    model, plain = _model(warp_frames=True, **kw), _model()
    plain.load_state_dict({k: v[: plain.in_channels] if k.startswith("head.2") else v
                           for k, v in model.state_dict().items()})  # fmt: skip
    return model, plain


def test_warp_frames_blend_the_warped_first_image_with_each_frame() -> None:
    """frame = m * warp(first image, flow) + (1 - m) * own image: m = 1 with a zero flow holds the first
    image; m = 1 with a 1-pixel flow samples it one pixel over; m = 0 gives the plain decoder's frames."""
    model, plain = _warp_and_plain()
    z, times = model.noise(2, _seeded(11)), torch.tensor([0.3, 0.0, 0.5, 0.1])  # unsorted: start is 0.0
    with torch.no_grad():
        _set_head(model, (0.0, 0.0), 30.0)
        held = model(z, times)
        _set_head(model, (1.0, 0.0), 30.0)
        shifted = model(z, times)
        _set_head(model, (0.0, 0.0), -30.0)
        own = model(z, times)
        reference = plain(z, times)[:, 1]  # the plain frame at the start time
    torch.testing.assert_close(held, reference[:, None].expand_as(held), atol=1e-5, rtol=0)
    torch.testing.assert_close(shifted[..., :-1], reference[:, None, ..., 1:].expand_as(shifted[..., :-1]),
                               atol=1e-5, rtol=0)  # fmt: skip
    torch.testing.assert_close(own, plain(z, times), atol=1e-5, rtol=0)


def test_relative_flow_starts_at_the_reference_and_moves_it_by_flow_changes() -> None:
    """relative_flow: a frame's flow minus the start's. The first frame is the start's own image whatever
    the decoded flow; a constant decoded flow moves nothing (every frame is that image, fully warped);
    a flow that changes over the clip moves the later frames."""
    model, plain = _warp_and_plain(relative_flow=True)
    z, times = model.noise(2, _seeded(12)), torch.tensor([0.3, 0.0, 0.5, 0.1])  # unsorted: start is 0.0
    with torch.no_grad():
        _set_head(model, (1.0, 0.0), 30.0)
        constant = model(z, times)
        conv = model.head[-1]
        conv.weight[model.in_channels : model.in_channels + 2].normal_(0.0, 0.5)  # a flow that varies
        moving = model(z, times)
        reference = plain(z, times)[:, 1]  # the plain frame at the start time
    torch.testing.assert_close(constant, reference[:, None].expand_as(constant), atol=1e-5, rtol=0)
    torch.testing.assert_close(moving[:, 1], reference, atol=1e-5, rtol=0)
    assert (moving[:, [0, 2, 3]] - reference[:, None]).abs().mean() > 1e-3


def test_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(VidynError, match="image_size"):
        vidyn.build_model("ode_gan_tiny", image_size=24)
    with pytest.raises(VidynError, match="temporal_blocks"):
        vidyn.build_model("ode_gan_tiny", image_size=8, temporal_blocks=2)
    with pytest.raises(VidynError, match="ODE method"):
        vidyn.build_model("ode_gan_tiny", method="leapfrog")
    with pytest.raises(VidynError, match="motion_regions"):
        vidyn.build_model("ode_gan_tiny", motion_regions=2)  # regions move the warp: warp_frames needed
    with pytest.raises(VidynError, match="relative_flow"):
        vidyn.build_model("ode_gan_tiny", relative_flow=True)  # a flow to be relative: warp_frames needed
    with pytest.raises(VidynError, match="region_transform"):
        vidyn.build_model("ode_gan_tiny", warp_frames=True, motion_regions=1, region_transform="shear")
    with pytest.raises(VidynError, match="num_samples"):
        _model().sample(0, TIMES)


def test_export_load_round_trip(tmp_path: Path) -> None:
    model = _model(num_classes=2)
    vidyn.export_model(model, tmp_path)
    loaded = vidyn.load_model(tmp_path)
    assert type(loaded) is type(model) and loaded.num_classes == 2
    cond = Condition(labels=torch.tensor([1, -1]))
    with torch.no_grad():
        a = model.sample(2, TIMES, condition=cond, generator=_seeded(10))
        b = loaded.sample(2, TIMES, condition=cond, generator=_seeded(10))
    assert torch.equal(a, b)


def test_condition_part_of_the_ode_function_computed_once_is_the_same_solve(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first ODE convolution's response to the constant condition and coordinates is computed once per
    solve; frames and all gradients equal those of convolving the whole input at every evaluation."""
    from vidyn.nn.ode import LatentODEFunc

    runs = []
    for once in (True, False):
        if not once:
            every_time = lambda self, cond: contextlib.nullcontext()  # noqa: E731
            monkeypatch.setattr(LatentODEFunc, "constant_condition", every_time)
        model = _model(num_classes=3).double()
        z = model.noise(2, _seeded(11))
        frames = model(z, TIMES.double(), torch.tensor([1, -1]))
        frames.square().mean().backward()
        runs.append((frames.detach(), [p.grad for p in model.parameters()], model.nfe))
    (a, grads_a, nfe_a), (b, grads_b, nfe_b) = runs
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    for ga, gb in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-13)
    assert nfe_a == nfe_b > 0
