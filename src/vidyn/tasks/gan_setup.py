"""The parts of the `gan` task (`vidyn.tasks.generation`) that are built once: the check of its
arguments, its discriminators and the class vocabulary of the generator it trains."""

from __future__ import annotations

from typing import Any

from torch import nn

from vidyn.errors import VidynError
from vidyn.models.motion_classifier import MotionClassifier, build_motion_classifier
from vidyn.models.video_discriminators import FrameDiscriminator, VideoDiscriminator
from vidyn.tasks.base import TaskRun


def class_names_for(model: nn.Module, run: TaskRun) -> list[str]:
    """The class vocabulary a class-conditional generator is exported with ([] for an unconditional one)."""
    num_classes = int(getattr(model, "num_classes", 0) or 0)
    if not num_classes:
        return []
    if run.class_names and len(run.class_names) != num_classes:
        raise VidynError(
            f"the model has num_classes={num_classes} but the training data names {len(run.class_names)} "
            f"classes; set model.args.num_classes={len(run.class_names)}"
        )
    return list(run.class_names) or [str(i) for i in range(num_classes)]


def batch_statistics(d_minibatch_std: bool | str) -> dict[str, bool]:
    """The discriminators' `minibatch_std` / `class_std` / `spatial_std` flags for
    `task.args.d_minibatch_std` (false, true or "batch", "class", "both", "spatial"), or a one-line
    VidynError."""
    choices = {False: (False, False, False), True: (True, False, False), "batch": (True, False, False),
               "class": (False, True, False), "both": (True, True, False),
               "spatial": (True, False, True)}  # fmt: skip
    if not isinstance(d_minibatch_std, (bool, str)) or d_minibatch_std not in choices:
        raise VidynError(
            f"d_minibatch_std must be false, true, batch, class, both or spatial; got {d_minibatch_std!r}"
        )
    batch, per_class, spatial = choices[d_minibatch_std]
    return {"minibatch_std": batch, "class_std": per_class, "spatial_std": spatial}


def check_gan_args(
    model: nn.Module, run: TaskRun, *, num_frames: int, intervals: list[int], r1_gamma: float,
    r1_every: int, instance_noise: float, real_target: float, label_drop: float, ema_decay: float,
    aux_classifier: str, aux_fake_classes: bool = False, d_frames_per_clip: int = 1,
    flow_smoothness: float = 0.0, aux_class_weight: float = 0.0, mode_seeking: float = 0.0,
) -> None:  # fmt: skip
    """`task.args` of the gan task, and a model it can train, or a one-line VidynError."""
    if not (callable(getattr(model, "noise", None)) and isinstance(getattr(model, "in_channels", None), int)):
        raise VidynError(
            f"task gan trains generators with noise(B) and forward(z, times, labels) (e.g. ode_gan); "
            f"{type(model).__name__} has none: use task.name=latent_sde for sde_video"
        )
    checks = [
        (num_frames >= 2, f"num_frames must be >= 2; got {num_frames}"),
        (
            isinstance(d_frames_per_clip, int) and 1 <= d_frames_per_clip <= num_frames,
            f"d_frames_per_clip must be in 1..num_frames; got {d_frames_per_clip}",
        ),
        (
            all(isinstance(k, int) and k >= 1 for k in intervals),
            f"frame_intervals must be ints >= 1: {intervals}",
        ),
        (r1_gamma >= 0 and instance_noise >= 0, "r1_gamma and instance_noise must be >= 0"),
        (
            aux_classifier in ("discriminator", "separate"),
            f"aux_classifier must be discriminator or separate; got {aux_classifier!r}",
        ),
        (
            not aux_fake_classes or aux_classifier == "separate",
            "aux_fake_classes needs aux_classifier: separate",
        ),
        (isinstance(r1_every, int) and r1_every >= 1, f"r1_every must be an int >= 1; got {r1_every}"),
        (0 < real_target <= 1, f"real_target must be in (0, 1]; got {real_target}"),
        (0 <= label_drop <= 1, f"label_drop must be in [0, 1]; got {label_drop}"),
        (0 <= ema_decay < 1, f"ema_decay must be in [0, 1) (0 = off); got {ema_decay}"),
        (
            flow_smoothness == 0 or (flow_smoothness > 0 and getattr(model, "warp_frames", False)),
            "flow_smoothness must be >= 0, and > 0 only for warped frames (model.args.warp_frames: true)",
        ),
        (
            aux_class_weight == 0
            or (aux_class_weight > 0 and int(getattr(model, "num_classes", 0) or 0) >= 2),
            "aux_class_weight must be >= 0, and > 0 only for a class-conditional model",
        ),
        (mode_seeking >= 0, f"mode_seeking must be >= 0 (0 = off); got {mode_seeking}"),
        (run.accumulate_grad_batches == 1, "task gan does not support trainer.accumulate_grad_batches"),
    ]
    for ok, message in checks:
        if not ok:
            raise VidynError(f"task.args: {message}")


def discriminators(
    model: nn.Module, num_classes: int, d_args: dict[str, Any], *, frame_differences: bool,
    aux_classifier: str | None, frame_discriminator: bool, fake_classes: bool = False,
    classifier_args: dict[str, Any] | None = None,
) -> tuple[VideoDiscriminator, FrameDiscriminator | None, MotionClassifier | None]:  # fmt: skip
    """The video discriminator, MoCoGAN's frame discriminator (optional) and the separate class reader for
    `model`'s clips: `aux_classifier` "discriminator" gives the video discriminator a class head,
    "separate" a `MotionClassifier` of the discriminators' widths (2K classes with `fake_classes`), None
    neither."""
    common = dict(in_channels=model.in_channels, image_size=model.image_size, num_classes=num_classes)
    video = VideoDiscriminator(
        **common,
        **d_args,
        frame_differences=frame_differences,
        aux_classifier=aux_classifier == "discriminator",
    )
    frame = FrameDiscriminator(**common, **d_args) if frame_discriminator else None
    widths = dict(base_channels=d_args["base_channels"], max_channels=d_args["max_channels"])
    if aux_classifier != "separate":
        return video, frame, None
    outputs = num_classes * (2 if fake_classes else 1)  # ADC-GAN: real class y, then fake class K + y
    return video, frame, build_motion_classifier(
        **common | {"num_classes": outputs}, args=widths | (classifier_args or {}),
        where="task.args.aux_classifier_args",
    )  # fmt: skip
