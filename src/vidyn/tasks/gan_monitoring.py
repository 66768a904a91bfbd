"""What the gan task logs and watches: gradient norms, the validation moment gap between generated and
real clips, a TensorBoard grid of sample clips, and a report of discriminator collapse."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def grad_norm(params: list[nn.Parameter]) -> Tensor:
    """The total L2 norm of the parameters' gradients (0 when none has one)."""
    norms = [p.grad.detach().norm() for p in params if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())


def moment_gap(fake: Tensor, real: Tensor) -> Tensor:
    """|mean| + |std| + |mean absolute frame difference| gaps between two sets of clips `(B, T, C, H, W)`."""
    gap = (fake.mean() - real.mean()).abs() + (fake.std() - real.std()).abs()
    if fake.shape[1] > 1 and real.shape[1] > 1:
        gap = gap + (fake.diff(dim=1).abs().mean() - real.diff(dim=1).abs().mean()).abs()
    return gap


def sample_grid(clips: Tensor, max_frames: int = 8) -> Tensor:
    """One image `(C, B*H, k*W)` of clips `(B, T, C, H, W)`: a row per clip, k <= max_frames columns."""
    b, t, c, h, w = clips.shape
    cols = torch.linspace(0, t - 1, min(t, max_frames)).round().long()
    x = clips[:, cols].clamp(0, 1)  # (B, k, C, H, W)
    return x.permute(2, 0, 3, 1, 4).reshape(c, b * h, len(cols) * w)  # -> (C, B, H, k, W) -> (C, B*H, k*W)


class DiscriminatorWatch:
    """Reports discriminator collapse: the video discriminator rejects every fake with confidence (mean
    D(fake) < `fake_below`) while accepting real clips (mean D(real) > `real_above`) for `patience`
    consecutive steps. The generator's BCE gradient then all but vanishes and training goes on without
    progress; the report names the step and the usual fixes. Reported once per run."""

    def __init__(self, patience: int = 200, fake_below: float = 0.02, real_above: float = 0.8) -> None:
        self.patience, self.fake_below, self.real_above = patience, fake_below, real_above
        self.streak, self.reported = 0, False

    def update(self, step: int, d_real: float, d_fake: float) -> str | None:
        """The report (once) at the step where the collapse has lasted `patience` steps, else None."""
        collapsed = d_fake < self.fake_below and d_real > self.real_above
        self.streak = self.streak + 1 if collapsed else 0
        if self.streak < self.patience or self.reported:
            return None
        self.reported = True
        return (
            f"discriminator collapse at step {step}: D(real) {d_real:.2f}, D(fake) {d_fake:.3f} for "
            f"{self.patience} steps, so the generator gets almost no gradient; try task.args.r1_gamma or "
            "instance_noise, a lower task.args.d_lr, or spectral_norm: true"
        )
