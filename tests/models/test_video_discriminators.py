"""Video/frame discriminators and GAN-loss helpers for ode_gan, and a tiny GAN sanity run."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import vidyn
import vidyn.models.ode_gan  # noqa: F401  (registers ode_gan_tiny)
from vidyn.errors import VidynError
from vidyn.models.motion_classifier import MotionClassifier, build_motion_classifier, map_moments
from vidyn.models.video_discriminators import (
    FrameDiscriminator,
    VideoDiscriminator,
    add_instance_noise,
    bce_d_loss,
    bce_g_loss,
    drop_labels,
    ema_model,
    instance_noise_std,
    r1_penalty,
    sample_frames,
    time_gaps,
)

TIMES = torch.arange(6, dtype=torch.float32) * 0.1


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models: one thread is faster, and far faster when other processes share the two cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _clips(b: int = 3, t: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, t, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def _video_d(**kw) -> VideoDiscriminator:
    torch.manual_seed(0)
    return VideoDiscriminator(in_channels=3, image_size=16, base_channels=8, max_channels=16, **kw)


def test_video_discriminator_shapes_and_time_gaps() -> None:
    d = _video_d()
    clips = _clips()
    scores = d(clips, TIMES)
    assert scores.shape == (3,)
    torch.testing.assert_close(d(clips, TIMES.expand(3, -1)), scores)
    assert d(_clips(t=11), torch.arange(11) * 0.05).shape == (3,)  # any length and rate
    assert d(clips[:, :1], TIMES[:1]).shape == (3,)
    # the same frames presented at another frame rate are judged differently
    assert (d(clips, TIMES * 2) - scores).abs().max() > 1e-4
    gaps = time_gaps(torch.tensor([0.0, 0.1, 0.3]), 1, 3)
    torch.testing.assert_close(gaps, torch.tensor([[[0.0, 0.1, 0.2], [0.1, 0.2, 0.0]]]))
    with pytest.raises(VidynError, match="times"):
        d(clips, TIMES[:4])


def test_frame_differences_give_the_video_discriminator_a_motion_stream() -> None:
    """With the frame channels' first-layer weights zeroed, it sees only differences and time gaps: every
    still clip then scores alike, whatever it shows, and a moving clip scores differently."""
    d = _video_d(frame_differences=True)
    first = d.net[0]
    assert first.in_channels == 3 + 3 + 2  # frames, their differences, the two gaps
    with torch.no_grad():
        first.weight[:, :3] = 0
    still_a = _clips(t=1).expand(-1, 6, -1, -1, -1)
    still_b = _clips(t=1, seed=1).expand(-1, 6, -1, -1, -1)
    torch.testing.assert_close(d(still_a, TIMES), d(still_b, TIMES))
    assert (d(_clips(), TIMES) - d(still_a, TIMES)).abs().min() > 1e-4
    # off by default: frames and gaps only
    assert _video_d().net[0].in_channels == 3 + 2


def test_projection_conditioning() -> None:
    d = _video_d(num_classes=4)
    clips = _clips()
    plain = d(clips, TIMES)
    null = d(clips, TIMES, torch.full((3,), -1))
    torch.testing.assert_close(null, plain)  # the null label adds no projection term
    a, b = d(clips, TIMES, torch.tensor([0, 1, -1])), d(clips, TIMES, torch.tensor([2, 3, -1]))
    assert (a[:2] - b[:2]).abs().min() > 1e-6 and a[2] == b[2]
    with pytest.raises(VidynError, match="0..3 or -1"):
        d(clips, TIMES, torch.tensor([0, 4, 1]))
    with pytest.raises(VidynError, match="unconditional"):
        _video_d()(clips, TIMES, torch.tensor([0, 1, 2]))


def _moving_squares(direction: int, n: int, seed: int) -> torch.Tensor:
    """Clips (n, 6, 3, 16, 16) of a bright 4x4 square moving 2 px per frame left (-1) or right (+1)."""
    gen = torch.Generator().manual_seed(seed)
    clips = torch.zeros(n, 6, 3, 16, 16)
    for i in range(n):
        x0, y0 = (
            6 + int(torch.randint(-2, 3, (1,), generator=gen)),
            int(torch.randint(0, 12, (1,), generator=gen)),
        )
        for t in range(6):
            x = x0 + direction * (t - 2)
            clips[i, t, :, y0 : y0 + 4, max(x, 0) : max(x + 4, 0)] = 1.0
    return clips


def test_aux_classifier_learns_the_class_of_real_motion() -> None:
    """AC-GAN's class head reads the clip's class from the same features: trained on left- against
    right-moving squares (same frames, only the direction differs), it classifies new clips."""
    d = _video_d(num_classes=2, aux_classifier=True)
    logits, classes = d(_clips(), TIMES, with_classes=True)
    assert logits.shape == (3,) and classes.shape == (3, 2)
    torch.testing.assert_close(logits, d(_clips(), TIMES))  # the same score as without the class head
    opt = torch.optim.Adam(d.parameters(), lr=3e-3)
    labels = torch.tensor([0] * 8 + [1] * 8)
    for step in range(40):
        clips = torch.cat([_moving_squares(-1, 8, step), _moving_squares(1, 8, 100 + step)])
        loss = nn.functional.cross_entropy(d(clips, TIMES, with_classes=True)[1], labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    test = torch.cat([_moving_squares(-1, 16, 999), _moving_squares(1, 16, 998)])
    with torch.no_grad():
        accuracy = (
            (d(test, TIMES, with_classes=True)[1].argmax(1) == labels.repeat_interleave(2)).float().mean()
        )
    assert accuracy > 0.9
    with pytest.raises(VidynError, match="class head"):
        _video_d(num_classes=2)(_clips(), TIMES, with_classes=True)
    with pytest.raises(VidynError, match="num_classes >= 2"):
        _video_d(aux_classifier=True)


@pytest.mark.parametrize("reader", ["gru", "mlp", "trajectory"])
def test_motion_classifier_learns_the_direction_of_motion_and_checks_its_input(reader: str) -> None:
    """The separate AC-GAN classifier, with either reader, learns left- against right-moving squares from
    the same frames, at any batch size, and refuses clips of the wrong channel count."""
    torch.manual_seed(0)
    clf = MotionClassifier(
        in_channels=3, image_size=16, num_classes=2, base_channels=8, max_channels=16, reader=reader
    )
    assert clf(_clips(), TIMES).shape == (3, 2)
    opt = torch.optim.Adam(clf.parameters(), lr=3e-3)
    labels = torch.tensor([0] * 8 + [1] * 8)
    for step in range(40):
        clips = torch.cat([_moving_squares(-1, 8, step), _moving_squares(1, 8, 100 + step)])
        loss = nn.functional.cross_entropy(clf(clips, TIMES), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    test = torch.cat([_moving_squares(-1, 16, 999), _moving_squares(1, 16, 998)])
    with torch.no_grad():
        accuracy = (clf(test, TIMES).argmax(1) == labels.repeat_interleave(2)).float().mean()
    assert accuracy > 0.9
    with pytest.raises(VidynError, match=r"clips must be \(B, T, 3, H, W\)"):
        clf(torch.rand(2, 6, 1, 16, 16), TIMES)
    with pytest.raises(VidynError, match="num_classes >= 2"):
        MotionClassifier(in_channels=3, image_size=16, num_classes=1)
    with pytest.raises(VidynError, match="reader 'lstm'; use one of gru, mlp, trajectory"):
        MotionClassifier(in_channels=3, image_size=16, num_classes=2, reader="lstm")
    with pytest.raises(VidynError, match=r"task.args.x: unknown key\(s\) depth; known: base_channels"):
        build_motion_classifier(
            in_channels=1, image_size=16, num_classes=2, args={"depth": 3}, where="task.args.x"
        )


def test_mlp_reader_reads_each_clip_on_its_own() -> None:
    """The mlp reader normalises each clip's features by their own statistics (instance norm, not batch
    norm): a clip's logits do not depend on the clips beside it in the batch, in training mode too, so
    generated clips are read as they are, not relative to a batch of them."""
    torch.manual_seed(0)
    clf = MotionClassifier(
        in_channels=3, image_size=16, num_classes=2, base_channels=8, max_channels=16, reader="mlp"
    )
    clips = torch.cat([_moving_squares(1, 2, 0), _clips(2)])
    torch.testing.assert_close(clf(clips, TIMES)[:1], clf(clips[:1], TIMES), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(clf(clips, TIMES)[2:], clf(clips[2:], TIMES), atol=1e-5, rtol=1e-4)


def _disc(cy: float, cx: float, radius: float, size: int = 33) -> torch.Tensor:
    """A binary disc on a size x size grid whose pixel centres run from -1 to 1."""
    grid = torch.linspace(-1, 1, size)
    return (((grid[:, None] - cy) ** 2 + (grid[None, :] - cx) ** 2) <= radius**2).float()


def test_map_moments_give_position_size_and_orientation() -> None:
    """Moments of known maps, against their closed forms: a disc's centre and its variance r^2/4 per axis
    (zero covariance); a single pixel's position and zero spread; a diagonal bar's positive covariance."""
    disc = _disc(-0.25, 0.5, 0.4)
    m = map_moments((disc / disc.sum())[None, None])[0, 0]
    torch.testing.assert_close(m[:2], torch.tensor([0.5, -0.25]), atol=1e-4, rtol=0)  # (x, y)
    torch.testing.assert_close(m[2:4], torch.tensor([0.04, 0.04]), atol=2e-3, rtol=0)  # r^2 / 4
    assert abs(float(m[4])) < 1e-5
    pixel = torch.zeros(1, 1, 5, 5)
    pixel[0, 0, 4, 1] = 1.0  # row 4 (y = 1), column 1 (x = -0.5)
    torch.testing.assert_close(map_moments(pixel)[0, 0], torch.tensor([-0.5, 1.0, 0.0, 0.0, 0.0]))
    bar = torch.eye(9)[None, None] / 9  # from top left to bottom right: x and y grow together
    assert float(map_moments(bar)[0, 0, 4]) > 0.3


def test_trajectory_reader_scales_on_its_first_training_batch_and_gates_its_keypoints() -> None:
    """The moments' scale is set once, from the first batch seen in training (not in eval, not again);
    the learned keypoints start with no say in the logits (their gate is 0) and get one once it opens;
    clips of any length and frame rate are read."""
    torch.manual_seed(0)
    clf = MotionClassifier(in_channels=3, image_size=16, num_classes=2, reader="trajectory", keypoints=4)
    clips = _moving_squares(1, 4, 0)
    clf.eval()
    clf(clips, TIMES)
    assert not bool(clf.reader.scale.any())  # eval never sets it
    clf.train()
    out = clf(clips, TIMES)
    scale = clf.reader.scale.clone()
    assert bool((scale > 0).all())
    clf(_moving_squares(-1, 4, 1) * 0.5, TIMES)
    torch.testing.assert_close(clf.reader.scale, scale)  # set once
    with torch.no_grad():
        for p in clf.reader.keypoint_net.parameters():
            p.add_(torch.randn_like(p))
    torch.testing.assert_close(clf(clips, TIMES), out)  # gate 0: the keypoints do not count yet
    with torch.no_grad():
        clf.reader.gate.fill_(1.0)
    assert (clf(clips, TIMES) - out).abs().max() > 1e-3
    assert clf(_moving_squares(1, 2, 3)[:, :4], TIMES[:4] * 2).shape == (2, 2)
    long = torch.cat([clips, clips], dim=1)  # 12 frames, resampled to the 16 steps its MLP reads
    assert clf(long, torch.arange(12) * 0.05).shape == (4, 2)


def test_motion_classifier_gru_does_not_saturate_when_its_features_grow() -> None:
    """Conv features 100x larger (as they grew in a GAN run that then never learned) leave the GRU's
    input, and so its gradients, as they were: the features are layer-normalised before the GRU."""
    torch.manual_seed(0)
    clf = MotionClassifier(in_channels=3, image_size=16, num_classes=2, base_channels=8, max_channels=16)
    clips, labels = _moving_squares(1, 4, 0), torch.tensor([0, 1, 0, 1])

    def gru_grad() -> float:
        clf.zero_grad()
        nn.functional.cross_entropy(clf(clips, TIMES), labels).backward()
        return float(clf.reader.gru.weight_ih_l0.grad.norm())

    before = gru_grad()
    with torch.no_grad():
        clf.reader.reduce.weight.mul_(100)
        clf.reader.reduce.bias.mul_(100)
    assert gru_grad() == pytest.approx(before, rel=0.05)


def test_frame_discriminator_and_frame_sampling() -> None:
    torch.manual_seed(0)
    d = FrameDiscriminator(in_channels=3, image_size=16, base_channels=8, num_classes=2, spectral_norm=True)
    clips = _clips()
    frames, labels = sample_frames(
        clips, torch.tensor([0, 1, -1]), frames_per_clip=2, generator=torch.Generator().manual_seed(1)
    )
    assert frames.shape == (6, 3, 16, 16) and labels.tolist() == [0, 0, 1, 1, -1, -1]
    for i in range(6):  # each frame is one of its own clip's frames
        assert any(torch.equal(frames[i], f) for f in clips[i // 2])
    scores = d(frames, labels)
    assert scores.shape == (6,)
    assert (
        d(frames, torch.zeros(6, dtype=torch.long)) - d(frames, torch.ones(6, dtype=torch.long))
    ).abs().max() > 0
    with pytest.raises(VidynError, match="frames"):
        d(clips)


def test_spectral_norm_video_discriminator() -> None:
    d = _video_d(spectral_norm=True, num_classes=2).train()
    for _ in range(3):  # power iterations converge in training mode
        d(_clips(), TIMES, torch.tensor([0, 1, -1]))
    w = d.net[0].weight.detach().flatten(1)
    assert abs(float(torch.linalg.matrix_norm(w, ord=2)) - 1) < 0.2


def test_r1_penalty() -> None:
    x = torch.randn(4, 3, 5, requires_grad=True)
    constant = (x * 0).sum(dim=(1, 2)) + 2.0  # a D that ignores its input
    assert float(r1_penalty(constant, x)) == 0.0
    x2 = torch.randn(4, 3, 5, requires_grad=True)
    assert float(r1_penalty(torch.full((4,), 2.0) + 0 * x2.detach().sum(), x2)) == 0.0
    lin = nn.Linear(15, 1)
    scores = lin(x.flatten(1)).squeeze(1)
    gamma = 10.0
    expected = gamma / 2 * lin.weight.square().sum()  # grad_x (w.x + b) = w for every sample
    torch.testing.assert_close(r1_penalty(scores, x, gamma=gamma), expected)
    r1_penalty(lin(x.flatten(1)).squeeze(1), x).backward()  # differentiable w.r.t. D's parameters
    torch.testing.assert_close(lin.weight.grad, lin.weight.detach())
    with pytest.raises(ValueError, match="requires_grad"):
        r1_penalty(scores, torch.randn(4, 3, 5))


def test_bce_label_smoothing() -> None:
    real, fake = torch.tensor([0.3, -1.0]), torch.tensor([0.5, 2.0])
    manual = -(0.9 * torch.log(torch.sigmoid(real)) + 0.1 * torch.log(1 - torch.sigmoid(real))).mean()
    manual = manual - torch.log(1 - torch.sigmoid(fake)).mean()
    torch.testing.assert_close(bce_d_loss(real, fake), manual)
    # the real term is minimised where D(real) = 0.9 (one-sided: fakes still aim at 0)
    at = torch.tensor([math.log(9.0)], requires_grad=True)
    bce_d_loss(at, torch.tensor([-50.0])).backward()
    assert abs(float(at.grad)) < 1e-6
    torch.testing.assert_close(bce_g_loss(fake), -torch.log(torch.sigmoid(fake)).mean())
    # without smoothing the real term keeps pushing confident logits up
    at.grad = None
    bce_d_loss(at, torch.tensor([-50.0]), real_target=1.0).backward()
    assert float(at.grad) < -0.05


def test_instance_noise_labels_dropout_and_ema() -> None:
    assert instance_noise_std(0, start=0.1, anneal_steps=100) == 0.1
    assert instance_noise_std(50, start=0.1, anneal_steps=100) == pytest.approx(0.05)
    assert instance_noise_std(500, start=0.1, anneal_steps=100) == 0.0
    x = torch.zeros(2, 3)
    assert add_instance_noise(x, 0.0) is x
    a = add_instance_noise(x, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(a, add_instance_noise(x, 0.5, torch.Generator().manual_seed(0))) and a.abs().sum() > 0

    labels = torch.arange(6)
    assert torch.equal(drop_labels(labels, 0.0), labels)
    assert drop_labels(labels, 1.0).tolist() == [-1] * 6
    g = torch.Generator().manual_seed(0)
    dropped = drop_labels(torch.arange(1000), 0.3, g)
    assert 200 < int((dropped == -1).sum()) < 400

    model = nn.Linear(2, 2)
    ema = ema_model(model, decay=0.9)
    ema.update_parameters(model)  # the first update copies
    old = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update_parameters(model)
    torch.testing.assert_close(ema.module.weight, 0.9 * old + 0.1 * model.weight.detach())


def test_discriminator_loss_reaches_every_generator_parameter() -> None:
    torch.manual_seed(0)
    gen = vidyn.build_model("ode_gan_tiny", num_classes=2)
    dv = _video_d(num_classes=2, spectral_norm=True)
    di = FrameDiscriminator(in_channels=3, image_size=16, base_channels=8, num_classes=2)
    labels = torch.tensor([0, -1])
    fake = gen(gen.noise(2, torch.Generator().manual_seed(0)), TIMES[:4], labels)
    frames, frame_labels = sample_frames(fake, labels)
    loss = bce_g_loss(dv(fake, TIMES[:4], labels)) + bce_g_loss(di(frames, frame_labels))
    loss.backward()
    for name, p in gen.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def _toy_clips(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two motion laws on 8x8: a bright 3x3 square moving right (label 0) or down (label 1)."""
    labels = torch.randint(2, (n,), generator=generator)
    start = torch.randint(0, 3, (n, 2), generator=generator)
    clips = torch.zeros(n, 4, 3, 8, 8)
    for i in range(n):
        for t in range(4):
            r, c = int(start[i, 0]) + t * int(labels[i]), int(start[i, 1]) + t * (1 - int(labels[i]))
            clips[i, t, :, r : r + 3, c : c + 3] = 1.0
    return clips, labels


def test_tiny_gan_sanity_run() -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    gen = vidyn.build_model("ode_gan_tiny", image_size=8, temporal_blocks=1, num_classes=2)
    dv = VideoDiscriminator(in_channels=3, image_size=8, base_channels=8, num_classes=2)
    opt_g = torch.optim.Adam(gen.parameters(), lr=2e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(dv.parameters(), lr=2e-3, betas=(0.5, 0.999))
    ema = ema_model(gen, decay=0.9)
    times = TIMES[:4]
    d_losses = []
    for step in range(40):
        real, labels = _toy_clips(8, g)
        labels = drop_labels(labels, 0.2, g)
        std = instance_noise_std(step, start=0.05, anneal_steps=30)
        fake = gen(gen.noise(8, g), times, labels)
        real = add_instance_noise(real, std, g).requires_grad_(True)
        real_logits = dv(real, times, labels)
        fake_logits = dv(add_instance_noise(fake.detach(), std, g), times, labels)
        d_loss = bce_d_loss(real_logits, fake_logits) + r1_penalty(real_logits, real, gamma=0.1)
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        g_loss = bce_g_loss(dv(add_instance_noise(fake, std, g), times, labels))
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        ema.update_parameters(gen)
        assert torch.isfinite(d_loss) and torch.isfinite(g_loss)
        d_losses.append(float(d_loss.detach()))
    assert min(d_losses[1:]) < d_losses[0] - 0.05  # D learns (its loss drops below where it started)
    assert max(d_losses) - min(d_losses) > 0.05
    with torch.no_grad():
        out = ema.module.sample(2, times, generator=torch.Generator().manual_seed(1))
    assert out.shape == (2, 4, 3, 8, 8) and torch.isfinite(out).all()


@pytest.mark.parametrize("reader", ["gru", "mlp"])
def test_conv_stack_layout_changes_no_score(reader: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The 3D conv stacks run channels-last-3d on CPU (`stack_layout`): scores and input gradients equal
    those of the default layout (the discriminator in float64 to rounding; the classifier, whose layer
    norm runs in float32, in float32)."""
    import vidyn.models.motion_classifier as mc
    import vidyn.models.video_discriminators as vd

    assert vd.stack_layout(torch.zeros(1, 2, 3, 4, 4)).is_contiguous(memory_format=torch.channels_last_3d)
    runs = []
    for layout in (True, False):
        if not layout:
            for module in (vd, mc):
                monkeypatch.setattr(module, "stack_layout", lambda x, normalised=False: x)
        torch.manual_seed(0)
        d = VideoDiscriminator(in_channels=3, image_size=16, base_channels=8, max_channels=16).double()
        c = MotionClassifier(in_channels=3, image_size=16, num_classes=4, reader=reader)
        out = []
        for net, clips in ((d, _clips().double()), (c, _clips())):
            clips.requires_grad_()
            score = net(clips, TIMES.to(clips.dtype))
            out += [score.detach(), *torch.autograd.grad(score.square().sum(), clips)]
        runs.append(out)
    for i, (a, b) in enumerate(zip(*runs, strict=True)):
        tol = dict(rtol=1e-12, atol=1e-14) if i < 2 else dict(rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a, b, **tol)
