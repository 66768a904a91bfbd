"""Generation tasks: `gan` (adversarial training of noise-driven generators such as `ode_gan`) and
`latent_sde` (the ELBO of latent-SDE generators such as `sde_video`, in `vidyn.tasks.latent_sde`).

`gan` follows seed 000 and MoCoGAN (Tulyakov et al., CVPR 2018): a 3D-CNN video discriminator and,
optionally, MoCoGAN's frame discriminator judge real and generated clips; BCE with one-sided label
smoothing (real target 0.9, Salimans et al. 2016) for the discriminators, the non-saturating BCE loss for
the generator; Adam(0.5, 0.999) in the shipped configs. Stabilisers (all optional): spectral norm on the
discriminators (Miyato et al. 2018), the R1 penalty (Mescheder et al. 2018), annealed instance noise
(Sønderby et al. 2017), label dropping to the null label so one class-conditional model also samples
unconditionally, an exponential moving average of the generator (Karras et al.), and against look-alike
samples minibatch standard deviation in the discriminators (batch-wide or per class) and MSGAN's
mode-seeking term on the generator (Mao et al., CVPR 2019). For class-conditional
models, an auxiliary classifier on the video discriminator's features (AC-GAN, Odena et al. 2017;
`aux_class_weight`): the discriminator learns the classes of real clips (cross-entropy on real clips only,
as in most AC-GAN implementations since Gong et al.'s TAC-GAN analysis, 2019), the generator is pushed to
make clips it classifies as the label asked for, on top of the projection discriminator's signal; with
`aux_classifier: separate` a `MotionClassifier` network with its own optimiser reads the class instead,
and with `aux_fake_classes` it is ADC-GAN's discriminative classifier (Hou et al., ICML 2022): 2K classes,
real clips of class y against y and generated clips asked for y against K + y, so the generator cannot
satisfy it with clips that only cross the real classes' decision boundary (the classifier learns what
generated clips of each class look like); the generator's term is the cross-entropy of its clips against
the real-y class over all 2K (ADC-GAN also adds + log p(fake-y), unbounded below; left out here).
R1 can be lazy (`r1_every`, StyleGAN2's lazy regularisation, Karras et al. 2020).

Continuous time (issue 12): with `frame_intervals: [1, 2, ...]` each batch sub-samples the data's
frames at one of these strides (and a random start), so the generator and the time-gap-aware video
discriminator see several frame rates; clip times are relative to the clip's first frame.

Optimisation is manual, one discriminator step then one generator step per batch, as in
`PredictionTask._adversarial_step`: the discriminator's step goes through the strategy but is not a
Lightning optimiser step, so `global_step` and `trainer.max_steps` count batches; gradients are clipped
here to `run.gradient_clip_val`. The discriminators (and the EMA copy) belong to the task, never to the
exported model. With `ema_decay > 0` the averaged generator lives in the submodule `ema` (so it is in
the checkpoints) and `export_extra()`, which `vidyn.api.train` calls right before exporting, copies its
weights into `self.model`: the exported generator is the EMA one.

Checkpoints: GAN losses do not rank generators, so the shipped configs set `trainer.monitor: step`
(best = last). `val/loss` is still logged as a cheap moment gap between generated and real validation
clips (|mean| + |std| + |mean absolute frame difference|), so a default monitor also works.
"""

from __future__ import annotations

import random
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidyn.errors import VidynError, VidynWarning
from vidyn.models.video_discriminators import (
    add_instance_noise,
    bce_d_loss,
    bce_g_loss,
    drop_labels,
    ema_model,
    instance_noise_std,
    mode_seeking_loss,
    r1_penalty,
    sample_frames,
)
from vidyn.registry import TASKS
from vidyn.tasks import optim as optim_lib
from vidyn.tasks.base import TaskRun, VidynTask
from vidyn.tasks.gan_monitoring import DiscriminatorWatch, grad_norm, moment_gap, sample_grid
from vidyn.tasks.gan_setup import batch_statistics, check_gan_args, class_names_for, discriminators
from vidyn.tasks.generator_progress import GeneratorProgress


@TASKS.register("gan", family="generator")
class GanTask(VidynTask):
    """Adversarial training of a generator with `noise(B)` and `forward(z, times, labels)`; see module doc.

    num_frames: frames per training clip; frame_intervals: frame strides of the data to train on (None =
    [1]); frame_discriminator: add MoCoGAN's image discriminator; d_frames_per_clip: how many random
    frames of each clip it judges (MoCoGAN: 1; more gives the generator's appearance more signal per
    step); flow_smoothness: weight of the generator's flow roughness in its loss (models with warped
    frames, e.g. ode_gan with warp_frames; 0 = off); d_base_channels / d_max_channels: the
    discriminators' widths; d_frame_differences: give the video discriminator the frame differences too
    (a motion stream); d_minibatch_std: both discriminators also read the spread of their features over
    the batch (ProGAN's minibatch standard deviation, against collapse onto one appearance; true or
    "batch"), over the batch's clips of the same class ("class": against one look-alike clip per class),
    or both ("both"), or over the batch at each feature and position of the last map before pooling
    ("spatial", ProGAN's form: it also sees objects that always sit at the same place);
    mode_seeking: weight of MSGAN's mode-seeking term on the generator (pairs of the batch asked for the
    same class; `mode_seeking_loss`; 0 = off; its size depends on the data's pixel distances, so its weight
    does too);
    aux_class_weight: weight of the AC-GAN class terms (0 = off); aux_classifier: where
    the class is read, "discriminator" (a head on the video discriminator's pooled features) or "separate"
    (a `MotionClassifier` network trained on real clips only, by its own optimiser with the discriminators'
    settings at aux_classifier_lr, None = theirs, and not clipped with them); aux_fake_classes: the
    separate classifier also learns the asked class of generated clips as K more classes (ADC-GAN);
    aux_classifier_args: the separate `MotionClassifier`'s arguments (e.g. `{reader: trajectory}`; None =
    the discriminators' widths and its defaults);
    spectral_norm;
    r1_gamma (0 = off); r1_every: apply R1 only every that many steps, with gamma times that many
    (StyleGAN2's lazy regularisation, Karras et al. 2020: the same penalty per step on average, and
    the double backward through the video discriminator skipped on the other steps; 1 = every step);
    instance_noise: the std at step 0, annealed
    linearly to 0 over instance_noise_steps (0 = the whole run); real_target: the smoothed BCE target of
    real clips; label_drop: probability of the null label per clip (class-conditional models); ema_decay
    (0 = off); d_lr: the discriminators' learning rate (None = optim.lr; otherwise optim's settings);
    sample_every_n_steps: a TensorBoard grid of samples every that many steps (0 = never).
    """

    def __init__(
        self,
        model: nn.Module,
        run: TaskRun,
        *,
        num_frames: int = 16,
        frame_intervals: list[int] | None = None,
        frame_discriminator: bool = True,
        d_frames_per_clip: int = 1,
        flow_smoothness: float = 0.0,
        d_base_channels: int = 32,
        d_max_channels: int = 256,
        d_frame_differences: bool = False,
        d_minibatch_std: bool | str = False,
        mode_seeking: float = 0.0,
        aux_class_weight: float = 0.0,
        aux_classifier: str = "discriminator",
        aux_classifier_lr: float | None = None,
        aux_fake_classes: bool = False,
        aux_classifier_args: dict[str, Any] | None = None,
        spectral_norm: bool = True,
        r1_gamma: float = 0.0,
        r1_every: int = 1,
        instance_noise: float = 0.0,
        instance_noise_steps: int = 0,
        real_target: float = 0.9,
        label_drop: float = 0.1,
        ema_decay: float = 0.0,
        d_lr: float | None = None,
        sample_every_n_steps: int = 500,
    ) -> None:
        super().__init__()
        intervals = list(frame_intervals or [1])
        check_gan_args(
            model, run, num_frames=num_frames, intervals=intervals, r1_gamma=r1_gamma, r1_every=r1_every,
            instance_noise=instance_noise, real_target=real_target, label_drop=label_drop,
            ema_decay=ema_decay, aux_classifier=aux_classifier, aux_fake_classes=aux_fake_classes,
            d_frames_per_clip=d_frames_per_clip, flow_smoothness=flow_smoothness,
            aux_class_weight=aux_class_weight, mode_seeking=mode_seeking,
        )  # fmt: skip
        self.automatic_optimization, self.gradient_clip_val = False, run.gradient_clip_val
        self.model, self.class_names = model, class_names_for(model, run)
        self.num_classes, self.num_frames, self.frame_intervals = len(self.class_names), num_frames, intervals
        self.d_frames_per_clip, self.flow_smoothness = d_frames_per_clip, float(flow_smoothness)
        self.r1_gamma, self.r1_every, self.mode_seeking = float(r1_gamma), r1_every, float(mode_seeking)
        self.real_target, self.label_drop, self.d_lr = float(real_target), float(label_drop), d_lr
        self.instance_noise, self.noise_steps = float(instance_noise), instance_noise_steps or run.total_steps
        self.optim_cfg, self.total_steps, self.warmup_steps = run.optim, run.total_steps, run.warmup_steps
        self.seed = int(torch.initial_seed()) % 2**31  # the run's seed: stride/start draws repeat on resume
        self.aux_class_weight, self.aux_classifier_lr = float(aux_class_weight), aux_classifier_lr
        self.aux_fake_classes, self.sample_every_n_steps = bool(aux_fake_classes), sample_every_n_steps
        self.watch = DiscriminatorWatch()
        d_args = dict(base_channels=d_base_channels, max_channels=d_max_channels, spectral_norm=spectral_norm,
                      **batch_statistics(d_minibatch_std))  # fmt: skip
        self.video_discriminator, self.frame_discriminator, self.classifier = discriminators(
            model, self.num_classes, d_args, frame_differences=d_frame_differences,
            aux_classifier=aux_classifier if aux_class_weight > 0 else None,
            frame_discriminator=frame_discriminator, fake_classes=self.aux_fake_classes,
            classifier_args=aux_classifier_args,
        )  # fmt: skip
        self.ema = ema_model(model, ema_decay).requires_grad_(False) if ema_decay > 0 else None

    # -- data ---------------------------------------------------------------------------------------
    def clip_of(self, batch: dict[str, Tensor], step: int) -> tuple[Tensor, Tensor]:
        """(clips `(B, num_frames, C, H, W)`, times `(B, num_frames)` from 0) at a drawn stride and start."""
        frames, times = batch["frames"], batch["times"]
        rng = random.Random(self.seed * 1_000_003 + step)
        stride = rng.choice(self.frame_intervals)
        span = (self.num_frames - 1) * stride + 1
        if frames.shape[1] < span:
            need = (self.num_frames - 1) * max(self.frame_intervals) + 1
            raise VidynError(
                f"task gan needs clips of {need} frames for num_frames={self.num_frames} at strides "
                f"{self.frame_intervals}; set data.args.num_frames={need} (the data has {frames.shape[1]})"
            )
        start = rng.randrange(frames.shape[1] - span + 1)
        index = torch.arange(start, start + span, stride, device=frames.device)
        t = times[:, index]
        return frames[:, index], t - t[:, :1]

    def labels_of(self, batch: dict[str, Tensor], drop: float) -> Tensor | None:
        if not self.num_classes:
            return None
        return drop_labels(batch["label"].long(), drop)

    # -- training -----------------------------------------------------------------------------------
    def _d_scores(
        self, clips: Tensor, times: Tensor, labels: Tensor | None, class_target: Tensor | None = None
    ) -> tuple[list[Tensor], Tensor | None]:
        """The discriminators' logits, and with `aux_class_weight` and a `class_target` `(B,)` (-1 rows
        ignored) the cross-entropy of the video discriminator's class head against it (else None)."""
        if self.aux_class_weight > 0 and class_target is not None:
            if self.classifier is not None:
                logits, class_logits = (
                    self.video_discriminator(clips, times, labels),
                    self.classifier(clips, times),
                )
            else:
                logits, class_logits = self.video_discriminator(clips, times, labels, with_classes=True)
            known = class_target >= 0  # a batch of null labels only has no class term (not NaN)
            ce = F.cross_entropy(class_logits[known], class_target[known]) if bool(known.any()) else None
            ce = class_logits.sum() * 0 if ce is None else ce
        else:
            logits, ce = self.video_discriminator(clips, times, labels), None
        scores = [logits]
        if self.frame_discriminator is not None:
            frames, frame_labels = sample_frames(clips, labels, frames_per_clip=self.d_frames_per_clip)
            scores.append(self.frame_discriminator(frames, frame_labels))
        return scores, ce

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        opt_g, opt_d, *opt_c = self.optimizers()  # type: ignore[misc]
        real, times = self.clip_of(batch, self.global_step)
        labels = self.labels_of(batch, self.label_drop)
        z = self.model.noise(real.shape[0]).to(real)
        fake = self.model(z, times, labels)
        std = instance_noise_std(self.global_step, start=self.instance_noise, anneal_steps=self.noise_steps)
        logs = {
            "nfe": torch.tensor(float(getattr(self.model, "nfe", 0))),
            "instance_noise": torch.tensor(std),
        }
        roughness = getattr(self.model, "flow_roughness", None)
        if roughness is not None:
            self.model.flow_roughness = None  # a graph tensor on the module would block deep copies
            logs["flow_roughness"] = roughness
        true_labels = batch["label"].long() if self.num_classes else None
        logs |= self._discriminator_step(opt_d, opt_c, real, fake.detach(), times, labels, true_labels, std)
        logs |= self._generator_step(opt_g, fake, times, labels, std, roughness, z)
        for scheduler in self.lr_schedulers():  # type: ignore[union-attr]
            scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self._log_step(logs, real.shape[0])
        self._maybe_log_samples(times[0], real.device)
        return logs["g_loss"].detach()

    def _discriminator_step(
        self, opt_d: Any, opt_c: list[Any], real: Tensor, fake: Tensor, times: Tensor, labels: Tensor | None,
        true_labels: Tensor | None, std: float,
    ) -> dict[str, Tensor]:  # fmt: skip
        """One step of the discriminators (and of the separate classifier) on real and detached fake clips;
        returns the figures to log."""
        apply_r1 = self.r1_gamma > 0 and self.global_step % self.r1_every == 0
        real_in = add_instance_noise(real, std).requires_grad_(apply_r1)
        d_real, ce_real = self._d_scores(real_in, times, labels, true_labels)
        fake_target = self._fake_class_target(labels)
        d_fake, ce_fake = self._d_scores(add_instance_noise(fake, std), times, labels, fake_target)
        d_loss = sum(
            bce_d_loss(r, f, real_target=self.real_target) for r, f in zip(d_real, d_fake, strict=True)
        )
        for ce in (ce_real, ce_fake):
            if ce is not None:
                d_loss = d_loss + self.aux_class_weight * ce
        r1_gamma = self.r1_gamma * self.r1_every
        r1 = sum(r1_penalty(r, real_in, gamma=r1_gamma) for r in d_real) if apply_r1 else None
        for opt in (opt_d, *opt_c):
            opt.zero_grad()
        self.manual_backward(d_loss + r1 if r1 is not None else d_loss)
        logs = {"d_loss": d_loss, "grad_norm_d": grad_norm(self._d_params())}
        self.clip_gradients(opt_d, gradient_clip_val=self.gradient_clip_val, gradient_clip_algorithm="norm")
        # Not `opt_d.step()`: Lightning counts every LightningOptimizer step, which would halve max_steps.
        self.trainer.strategy.optimizer_step(opt_d.optimizer, lambda: None)
        for opt in opt_c:  # the separate classifier: its own optimiser, not clipped with the discriminators
            self.trainer.strategy.optimizer_step(opt.optimizer, lambda: None)
        logs |= {"d_real": torch.sigmoid(d_real[0]).mean(), "d_fake": torch.sigmoid(d_fake[0]).mean()}
        optional = {"r1": r1, "class_ce_real": ce_real, "class_ce_fake_as_fake": ce_fake}
        return logs | {k: v for k, v in optional.items() if v is not None}

    def _generator_step(
        self, opt_g: Any, fake: Tensor, times: Tensor, labels: Tensor | None, std: float,
        roughness: Tensor | None, z: Tensor,
    ) -> dict[str, Tensor]:  # fmt: skip
        """One generator step: the non-saturating loss of each discriminator, the class term, the flow
        roughness and the mode-seeking term (when weighted); returns the figures to log."""
        self.toggle_optimizer(opt_g)  # the discriminators need no gradients in the generator's backward
        g_scores, ce_fake = self._d_scores(add_instance_noise(fake, std), times, labels, labels)
        g_loss = sum(bce_g_loss(s) for s in g_scores)
        if ce_fake is not None:
            g_loss = g_loss + self.aux_class_weight * ce_fake
        if self.flow_smoothness > 0 and roughness is not None:
            g_loss = g_loss + self.flow_smoothness * roughness
        seeking = mode_seeking_loss(fake, z, labels) if self.mode_seeking > 0 else None
        if seeking is not None:
            g_loss = g_loss + self.mode_seeking * seeking
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        logs = {"g_loss": g_loss, "grad_norm_g": grad_norm(list(self.model.parameters()))}
        self.clip_gradients(opt_g, gradient_clip_val=self.gradient_clip_val, gradient_clip_algorithm="norm")
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        optional = {"class_ce_fake": ce_fake, "mode_seeking": seeking}
        return logs | {k: v for k, v in optional.items() if v is not None}

    def _log_step(self, logs: dict[str, Tensor], batch_size: int) -> None:
        """Log the step's figures under train/, and warn once when the discriminator has collapsed."""
        d_real_mean, d_fake_mean = float(logs["d_real"].detach()), float(logs["d_fake"].detach())
        report = self.watch.update(self.global_step, d_real_mean, d_fake_mean)
        if report is not None and self.trainer.is_global_zero:
            warnings.warn(report, VidynWarning, stacklevel=1)
        self.log_dict({f"train/{k}": v.detach().float() for k, v in logs.items()}, batch_size=batch_size)
        self.log("train/loss", logs["g_loss"].detach(), prog_bar=True, batch_size=batch_size)

    def _fake_class_target(self, labels: Tensor | None) -> Tensor | None:
        """ADC-GAN's targets `(B,)` of generated clips in the discriminators' step: K + the asked class (-1,
        the null label, stays -1 and is ignored); None without `aux_fake_classes`."""
        if not self.aux_fake_classes or labels is None:
            return None
        return torch.where(labels >= 0, labels + self.num_classes, labels)

    def _d_params(self) -> list[nn.Parameter]:
        extra = list(self.frame_discriminator.parameters()) if self.frame_discriminator is not None else []
        return [*self.video_discriminator.parameters(), *extra]

    @property
    def sampler(self) -> nn.Module:
        """The generator samples are drawn from: the EMA copy when on, else the trained model."""
        return self.ema.module if self.ema is not None else self.model

    progress_sampler = sampler  # what `GeneratorProgress` scores after each validation round

    def extra_callbacks(self) -> list[Any]:
        return [GeneratorProgress(num_frames=self.num_frames, class_names=list(self.class_names))]

    @torch.no_grad()
    def _maybe_log_samples(self, times: Tensor, device: torch.device) -> None:
        every = self.sample_every_n_steps
        experiment = getattr(self.logger, "experiment", None)
        if not every or self.global_step % every or not hasattr(experiment, "add_image"):
            return
        if not self.trainer.is_global_zero:
            return
        n = self.num_classes or 4
        labels = torch.arange(n, device=device) if self.num_classes else None
        gen = torch.Generator().manual_seed(0)  # the same noise every time: the grid shows training progress
        z = self.sampler.noise(n, gen).to(device)
        clips = self.sampler(z, times, labels)
        experiment.add_image("samples", sample_grid(clips.float().cpu()), self.global_step)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        real, times = batch["frames"][:, : self.num_frames], batch["times"][:, : self.num_frames]
        times = times - times[:, :1]
        gen = torch.Generator().manual_seed(batch_idx)
        with torch.no_grad():
            fake = self.sampler(
                self.sampler.noise(real.shape[0], gen).to(real), times, self.labels_of(batch, 0.0)
            )
        bs = real.shape[0]
        self.log("val/loss", moment_gap(fake, real), prog_bar=True, sync_dist=True, batch_size=bs)
        self.log("val/frame_change", fake.diff(dim=1).abs().mean(), sync_dist=True, batch_size=bs)

    def configure_optimizers(self) -> tuple[dict, ...]:
        """The generator's and the discriminators' optimisers, and the separate classifier's (same settings
        at aux_classifier_lr) when there is one."""
        generator = optim_lib.configure(
            self.model.parameters(), self.optim_cfg, self.total_steps, self.warmup_steps
        )
        d_cfg = {**self.optim_cfg, **({"lr": self.d_lr} if self.d_lr is not None else {})}
        d = optim_lib.configure(self._d_params(), d_cfg, self.total_steps, self.warmup_steps)
        if self.classifier is None:
            return generator, d
        c_cfg = d_cfg | ({"lr": self.aux_classifier_lr} if self.aux_classifier_lr is not None else {})
        c = optim_lib.configure(self.classifier.parameters(), c_cfg, self.total_steps, self.warmup_steps)
        return generator, d, c

    # -- export -------------------------------------------------------------------------------------
    def use_ema_weights(self) -> None:
        """Copy the EMA generator's weights into `self.model` (no-op without EMA)."""
        if self.ema is not None:
            self.model.load_state_dict(self.ema.module.state_dict())

    def export_extra(self) -> dict[str, Any]:
        """The class vocabulary; with EMA, first puts the averaged weights into the model to be exported."""
        self.use_ema_weights()
        return {"class_names": self.class_names}
