"""sde_video: the Generator contract, conditioning modes, ELBO terms, solvers, export and a tiny overfit."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import vidyn
import vidyn.models.sde_video  # noqa: F401  (registers sde_video / sde_video_tiny)
from vidyn.errors import VidynError
from vidyn.models.interface import Condition, Generator
from vidyn.nn.sde import SDE_METHODS, BoundSDE

TIMES = torch.arange(6, dtype=torch.float32) * 0.1


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models gain nothing from threads, and on shared 2-core machines they lose a lot to contention.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return vidyn.build_model("sde_video_tiny", **kw)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _clips(b: int = 2, t: int = 6) -> torch.Tensor:
    return torch.rand(b, t, 1, 16, 16, generator=_gen(123))


def test_generator_contract() -> None:
    model = _model().eval()
    assert isinstance(model, Generator)
    assert (model.num_classes, model.in_channels, model.image_size, model.continuous_time) == (0, 1, 16, True)
    with torch.no_grad():
        a = model.sample(3, TIMES, generator=_gen(1))
        b = model.sample(3, TIMES, generator=_gen(1))
        c = model.sample(3, TIMES, generator=_gen(2))
    assert a.shape == (3, 6, 1, 16, 16) and a.dtype == torch.float32
    assert 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, b), "the same generator state must give the same samples"
    assert (a - c).abs().mean() > 1e-4, "different seeds must give different samples"
    assert (a[0] - a[1]).abs().mean() > 1e-4, "samples of one call must differ"
    # batched identical rows mean the same as the shared grid; different rows are refused
    with torch.no_grad():
        again = model.sample(3, TIMES.expand(3, -1), generator=_gen(1))
    torch.testing.assert_close(again, a)
    with pytest.raises(VidynError, match="identical"):
        model.sample(2, torch.stack([TIMES, TIMES + 0.05]))


def test_any_times_are_hit_exactly() -> None:
    model = _model().eval()
    irregular = torch.tensor([0.0, 0.03, 0.31, 0.32, 0.9])
    with torch.no_grad():
        out = model.sample(2, irregular, generator=_gen())
        assert out.shape == (2, 5, 1, 16, 16)
        assert model.last_nfe["steps"] == 1 + 6 + 1 + 12  # ceil(gap / dt) steps per interval, dt 0.05
        # unsorted and repeated times decode the states at those times
        shuffled = model.sample(2, irregular[[3, 0, 4, 1, 2, 3]], generator=_gen())
    torch.testing.assert_close(shuffled, out[:, [3, 0, 4, 1, 2, 3]])


def _conditions(frames: torch.Tensor) -> dict[str, Condition | None]:
    return {
        "none": None,
        "one_frame": Condition(frames=frames[:, :1], times=TIMES[:1]),
        "frames": Condition(frames=frames[:, :3], times=TIMES[:3]),
        "label": Condition(labels=torch.tensor([1])),
        "frames_label": Condition(frames=frames[:, :2], times=TIMES[:2], labels=torch.tensor([2])),
    }


@pytest.mark.parametrize("mode", ["none", "one_frame", "frames", "label", "frames_label"])
def test_conditioning_modes(mode: str) -> None:
    model = _model(num_classes=3).eval()
    condition = _conditions(_clips(1))[mode]
    with torch.no_grad():
        out = model.sample(4, TIMES[2:], condition=condition, generator=_gen())
    assert out.shape == (4, 4, 1, 16, 16) and 0 <= out.min() and out.max() <= 1
    assert (out[0] - out[1]).abs().mean() > 1e-4


def test_condition_changes_samples_and_broadcasts() -> None:
    model = _model(num_classes=3).eval()
    clips = _clips(2)
    with torch.no_grad():
        by_label = [
            model.sample(2, TIMES, condition=Condition(labels=torch.tensor([k])), generator=_gen())
            for k in (0, 1)
        ]
        free = model.sample(2, TIMES, generator=_gen())
        null = model.sample(2, TIMES, condition=Condition(labels=torch.tensor([-1])), generator=_gen())
        one = model.sample(
            2, TIMES, condition=Condition(frames=clips[:1, :2], times=TIMES[:2]), generator=_gen()
        )
        both = model.sample(
            2, TIMES, condition=Condition(frames=clips[[0, 0], :2], times=TIMES[:2]), generator=_gen()
        )
        other = model.sample(
            2, TIMES, condition=Condition(frames=clips[1:, :2], times=TIMES[:2]), generator=_gen()
        )
    assert (by_label[0] - by_label[1]).abs().mean() > 1e-5, "labels must change the samples"
    torch.testing.assert_close(free, null)  # no condition is the null label
    torch.testing.assert_close(one, both)  # a condition batch of 1 broadcasts
    assert (one - other).abs().mean() > 1e-5, "context frames must change the samples"


def test_condition_errors() -> None:
    model = _model(num_classes=3)
    clips = _clips(2)
    with pytest.raises(VidynError, match="unknown class id 3"):
        model.sample(2, TIMES, condition=Condition(labels=torch.tensor([3])))
    with pytest.raises(VidynError, match="unknown class id 0"):
        _model().sample(2, TIMES, condition=Condition(labels=torch.tensor([0])))
    with pytest.raises(VidynError, match="condition.times is required"):
        model.sample(2, TIMES, condition=Condition(frames=clips[:, :2]))
    with pytest.raises(VidynError, match="precede"):
        model.sample(2, TIMES[:3], condition=Condition(frames=clips[:, 1:3], times=TIMES[1:3]))
    with pytest.raises(VidynError, match="batch 1 or num_samples"):
        model.sample(3, TIMES, condition=Condition(frames=clips[:, :2], times=TIMES[:2]))
    with pytest.raises(VidynError, match=r"resize to 16x16"):
        model.sample(2, TIMES, condition=Condition(frames=torch.rand(1, 2, 1, 8, 8), times=TIMES[:2]))
    with pytest.raises(VidynError, match="power of two"):
        _model(image_size=24)


def test_elbo_terms_and_kl_weight() -> None:
    model = _model(num_classes=3).eval()  # eval: BatchNorm running statistics stay fixed between the calls
    clips, labels = _clips(), torch.tensor([0, -1])
    out = model.elbo(clips, TIMES, num_context=2, labels=labels, generator=_gen())
    terms = {"loss", "nll", "kl_z0", "kl_path", "consistency", "diffusion", "recon_mse"}
    terms |= {"z0_sampler", "z0_reader"}
    assert set(out) == terms and out["z0_sampler"] == 0 == out["z0_reader"]  # no ex-post fits by default
    assert all(v.dim() == 0 and torch.isfinite(v) for v in out.values())
    assert out["kl_z0"] >= 0 and out["kl_path"] >= 0 and out["consistency"] > 0
    assert 0.01 <= out["diffusion"] <= 0.2  # inside [min_diffusion, max_diffusion]
    # loss = nll + kl_weight * (kl_z0 + kl_path) + consistency_weight * consistency
    halves = [
        model.elbo(clips, TIMES, num_context=2, labels=labels, kl_weight=w, generator=_gen())
        for w in (0.5, 2.0)
    ]
    kl = halves[0]["kl_z0"] + halves[0]["kl_path"]
    torch.testing.assert_close(halves[1]["loss"] - halves[0]["loss"], 1.5 * kl, rtol=1e-4, atol=1e-3)
    expected = out["nll"] + out["kl_z0"] + out["kl_path"] + model.consistency_weight * out["consistency"]
    torch.testing.assert_close(out["loss"], expected)
    # the path KL's own weight: 3 * kl_path instead of 1 * kl_path, the rest unchanged
    heavier = model.elbo(clips, TIMES, num_context=2, labels=labels, kl_path_weight=3.0, generator=_gen())
    torch.testing.assert_close(heavier["loss"] - out["loss"], 2 * out["kl_path"], rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("likelihood", ["gaussian", "laplace", "gauss_laplace"])
def test_pixel_likelihoods(likelihood: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # With every decoded pixel at 0.5, nll and recon_mse follow from the frames alone.
    model = _model(likelihood=likelihood, obs_std=0.1).eval()
    monkeypatch.setattr(model, "_decode", lambda zs, cond: torch.full_like(clips, 0.5))
    clips = _clips()
    out = model.elbo(clips, TIMES, num_context=1, generator=_gen())
    err, pixels = clips - 0.5, clips[0].numel()
    if likelihood == "gaussian":  # -log N(x | 0.5, 0.1^2) per pixel, summed per clip, mean over clips
        per_clip = (err.square() / (2 * 0.01)).sum((1, 2, 3, 4)) + pixels * 0.5 * torch.log(
            torch.tensor(2 * torch.pi * 0.01)
        )
    elif (
        likelihood == "laplace"
    ):  # Laplace of std 0.1: scale b = 0.1 / sqrt(2); -log p = |x - 0.5| / b + log(2 b)
        b = 0.1 / 2**0.5
        per_clip = (err.abs() / b).sum((1, 2, 3, 4)) + pixels * torch.log(torch.tensor(2 * b))
    else:  # exp(-e^2 / (2 * 0.01) - |e| / b) / Z, with Z integrated numerically
        b = 0.1 / 2**0.5
        kernel = lambda e: e.square() / (2 * 0.01) + e.abs() / b  # noqa: E731
        grid = torch.linspace(-2, 2, 400001, dtype=torch.float64)
        log_z = torch.trapezoid((-kernel(grid)).exp(), grid).log().float()
        per_clip = kernel(err).sum((1, 2, 3, 4)) + pixels * log_z
    torch.testing.assert_close(out["nll"], per_clip.mean())
    torch.testing.assert_close(out["recon_mse"], err.square().mean())
    with pytest.raises(VidynError, match="likelihood must be one of"):
        _model(likelihood="poisson")


def test_path_kl_vanishes_when_posterior_drift_is_the_prior_drift() -> None:
    model = _model()
    with torch.no_grad():  # f = h + u: u = 0 makes the posterior drift the prior drift
        model.sde.posterior_correction[-1].weight.zero_()
        model.sde.posterior_correction[-1].bias.zero_()
    out = model.elbo(_clips(), TIMES, num_context=1, generator=_gen())
    assert out["kl_path"].abs() < 1e-6


def test_dropping_the_condition_is_the_unconditional_objective() -> None:
    model = _model(num_classes=3).eval()
    clips = _clips()
    dropped = model.elbo(
        clips, TIMES, num_context=3, labels=torch.tensor([1, 2]), drop_condition=1.0, generator=_gen()
    )
    free = model.elbo(clips, TIMES, num_context=0, generator=_gen())
    for key in dropped:
        torch.testing.assert_close(dropped[key], free[key])


def test_gradients_reach_every_part() -> None:
    model = _model(num_classes=3)
    clips = _clips()
    for drop in (0.0, 1.0):  # conditioned, then null condition (null vectors)
        model.elbo(
            clips, TIMES, num_context=2, labels=torch.tensor([0, 1]), drop_condition=drop, generator=_gen()
        )["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"
        assert torch.isfinite(p.grad).all(), name


VALID = [(t, m) for t, methods in SDE_METHODS.items() for m in methods]


@pytest.mark.parametrize(("sde_type", "method"), VALID)
def test_valid_solvers_run(sde_type: str, method: str) -> None:
    model = _model(sde_type=sde_type, method=method)
    out = model.elbo(_clips(), TIMES, num_context=1, generator=_gen())
    out["loss"].backward()
    assert torch.isfinite(model.sde.diffusion.w1.grad).all()
    with torch.no_grad():
        a = model.sample(2, TIMES, generator=_gen())
    assert torch.equal(a, model.sample(2, TIMES, generator=_gen()).detach())


@pytest.mark.parametrize(("sde_type", "method"), [("ito", "euler"), ("stratonovich", "reversible_heun")])
def test_adjoint_gradients_match_direct(sde_type: str, method: str) -> None:
    """torchsde's adjoint solves the backward SDE numerically, so its gradients equal backprop's up to the
    solver's error (float64, dt 0.01: below 2e-3 relative per network). Each interval's posterior context
    stays bound to it: read from the last interval instead, the correction's gradient was 5% off."""
    grads = []
    for adjoint in (False, True):
        model = _model(sde_type=sde_type, method=method, adjoint=adjoint, dt=0.01).double()
        model.elbo(_clips().double(), TIMES.double(), num_context=1, generator=_gen())["loss"].backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for part in ("sde.posterior_correction", "sde.prior_drift", "sde.diffusion", "posterior_rnn", "encoder"):
        direct, adjoint = (
            torch.cat([g.flatten() for n, g in run.items() if n.startswith(part)]) for run in grads
        )
        error = float((adjoint - direct).norm() / direct.norm())
        assert error < 2e-3, f"{part}: adjoint gradient {error:.1e} off backprop's"


@pytest.mark.parametrize(
    ("sde_type", "method", "match"),
    [
        ("stratonovich", "euler", "needs sde_type='ito'"),
        ("ito", "reversible_heun", "needs sde_type='stratonovich'"),
        ("ito", "midpoint", "choose one of: euler, milstein, srk"),
        ("stratonovich", "srk", "needs sde_type='ito'"),
        ("ito", "dopri5", "not valid"),
        ("levy", "euler", "sde_type must be one of"),
    ],
)
def test_invalid_solvers_are_refused(sde_type: str, method: str, match: str) -> None:
    with pytest.raises(VidynError, match=match):
        _model(sde_type=sde_type, method=method)


def test_export_load_round_trip(tmp_path: Path) -> None:
    model = vidyn.build_model("sde_video_tiny", num_classes=3, consistency=False).eval()
    vidyn.export_model(model, tmp_path)
    loaded = vidyn.load_model(tmp_path)
    assert type(loaded) is type(model) and loaded.num_classes == 3 and not loaded.consistency
    cond = Condition(frames=_clips(1)[:, :2], times=TIMES[:2], labels=torch.tensor([2]))
    with torch.no_grad():
        a = model.sample(2, TIMES, condition=cond, generator=_gen(5))
        b = loaded.sample(2, TIMES, condition=cond, generator=_gen(5))
    assert torch.equal(a, b)


def test_without_consistency_module() -> None:
    model = _model(consistency=False)
    full = _model()
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in full.parameters())
    out = model.elbo(_clips(), TIMES, num_context=2, generator=_gen())
    assert out["consistency"] == 0
    out["loss"].backward()
    with torch.no_grad():
        s = model.sample(
            2, TIMES, condition=Condition(frames=_clips(1)[:, :1], times=TIMES[:1]), generator=_gen()
        )
    assert s.shape == (2, 6, 1, 16, 16)


def test_tiny_overfit() -> None:
    from vidyn.data.synthetic import shapes

    data = shapes(
        "train", size=16, channels=1, num_frames=6, frame_interval=0.1, max_objects=1, num_samples=4
    )
    clips = torch.stack([data[i]["frames"] for i in range(4)])  # (4, 6, 1, 16, 16)
    labels = torch.stack([data[i]["label"] for i in range(4)])
    model = _model(num_classes=7)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen, losses = _gen(), []
    for step in range(40):
        out = model.elbo(
            clips,
            TIMES,
            num_context=1,
            labels=labels,
            kl_weight=min(1.0, step / 20),
            drop_condition=0.2,
            generator=gen,
        )
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["nll"].item())
    assert sum(losses[-5:]) / 5 < 0.7 * losses[0], losses


def test_reencoding_leaves_batchnorm_statistics_to_real_frames() -> None:

    model = _model()
    twin = copy.deepcopy(model)
    clips = _clips()
    model.elbo(clips, TIMES, num_context=2, generator=_gen())
    twin.encoder(clips.flatten(0, 1))  # (B*T, C, H, W): the real frames alone
    for (name, a), (_, b) in zip(model.encoder.named_buffers(), twin.encoder.named_buffers(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


def _direct_evaluation(self, name, z, net, count):  # BoundSDE._memo without the memo
    self.func.nfe[count] += 1
    return net(z)


@pytest.mark.parametrize(
    ("sde_type", "method", "adjoint"),
    [("ito", "euler", False), ("ito", "euler", True), ("stratonovich", "reversible_heun", True)],
)
def test_each_network_runs_once_per_state(
    sde_type: str, method: str, adjoint: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torchsde evaluates f, g and h at y0 for its shape checks, and logqp needs the prior drift in f and
    h: the memo serves those repeats, so the ELBO and its gradients (the adjoint's included) are those of
    evaluating every call, in float64 to rounding, with fewer evaluations."""
    runs = []
    for memo in (True, False):
        if not memo:
            monkeypatch.setattr(BoundSDE, "_memo", _direct_evaluation)
        model = _model(sde_type=sde_type, method=method, adjoint=adjoint, dt=0.05).double()
        out = model.elbo(_clips().double(), TIMES.double(), num_context=1, generator=_gen())
        out["loss"].backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        runs.append((out["loss"].detach(), grads, dict(model.sde.nfe)))
    (loss, grads, nfe), (loss_all, grads_all, nfe_all) = runs
    torch.testing.assert_close(loss, loss_all, rtol=1e-12, atol=0)
    torch.testing.assert_close(grads, grads_all, rtol=1e-10, atol=1e-12 * float(grads_all.abs().max()))
    assert nfe["drift"] < nfe_all["drift"] and nfe["diffusion"] < nfe_all["diffusion"]
    if not adjoint:  # Euler, 2 steps per 0.1 s interval at dt 0.05: one prior drift, correction, g per step
        assert nfe["drift"] == 2 * nfe["steps"] and nfe["diffusion"] == nfe["steps"], nfe


def test_per_frame_layout_changes_no_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """The frame encoder and decoder run channels-last on CPU (`per_frame_layout`) and hand back the
    default layout: the ELBO and its gradients equal those of the default layout (float64, to rounding)."""
    import vidyn.nn.sde_nets as nets

    assert nets.per_frame_layout(torch.zeros(2, 3, 4, 4)).is_contiguous(memory_format=torch.channels_last)
    runs = []
    for layout in (True, False):
        if not layout:
            monkeypatch.setattr(nets, "per_frame_layout", lambda x: x)
        model = _model().double()
        out = model.elbo(_clips().double(), TIMES.double(), num_context=1, generator=_gen())
        out["loss"].backward()
        emb = model.encoder(_clips().double().flatten(0, 1))
        assert emb.is_contiguous()
        runs.append((out["loss"].detach(), [p.grad for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(runs[0][0], runs[1][0], rtol=1e-12, atol=0)
    scale = max(float(g.abs().max()) for g in runs[1][1])
    for a, b in zip(runs[0][1], runs[1][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12 * scale)


def test_a_trained_model_deep_copies() -> None:
    """The SDE module keeps no per-solve inputs: right after a training step (and after a sample) it
    deep-copies, as `vidyn compare` copies a model to time it, and the copy samples the same clips."""
    model = _model()
    model.elbo(_clips(), TIMES, num_context=1, generator=_gen())["loss"].backward()
    twin = copy.deepcopy(model)
    with torch.no_grad():
        clips = model.sample(2, TIMES, generator=_gen())
        torch.testing.assert_close(twin.sample(2, TIMES, generator=_gen()), clips, rtol=0, atol=0)
        torch.testing.assert_close(
            copy.deepcopy(model).sample(2, TIMES, generator=_gen()), clips, rtol=0, atol=0
        )
