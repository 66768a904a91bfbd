"""Frame metrics accumulated across batches and DDP processes (a torchmetrics `Metric`).

`FrameMetrics` keeps, for every metric and prediction step, the sum of per-frame values and the number of
clips seen, all as float64 states reduced by summation. Summing is exact bookkeeping, so accumulating any
split of a data set into batches, on any number of processes, gives the same numbers as
`summarize(frame_metrics(all_pred, all_target))` on the whole set (up to float64 rounding).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from vidyn.errors import VidynError
from vidyn.metrics.frames import (
    CONVENTIONS,
    PER_FRAME_METRICS,
    check_frame_pair,
    frame_metrics,
    psnr_from_mse,
)


def _distributed() -> bool:
    return (
        torch.distributed.is_available()
        and torch.distributed.is_initialized()
        and torch.distributed.get_world_size() > 1
    )


class FrameMetrics(Metric):
    """Per-step and overall means of per-frame metrics, plus the published conventions.

    Args:
        num_steps: number of predicted frames T per clip. If None it is taken from the first `update`
            (and again after `reset`). That is only safe in one process: under DDP a rank that sees no
            batch would hold empty states and the sum across ranks would fail, so pass `num_steps` when
            training or evaluating distributed (`update` refuses otherwise).
        names: our per-frame metrics to report ("mse", "mae", "psnr", "ssim"; see `frame_metrics`).
        conventions: also accumulate the published conventions: `openstl_mse` / `openstl_mae` (OpenSTL,
            per-frame sums over C·H·W), `predrnn_psnr` (PredRNN, PSNR on uint8 frames) and `vidode_psnr`
            (Vid-ODE, PSNR of the pooled MSE; this needs "mse", which is then accumulated and reported).

    `update(pred, target)` takes `(B, T, C, H, W)` frames in [0, 1]. `compute()` returns the structure of
    `vidyn.metrics.frames.summarize`: `{name: float, ..., "per_step": {name: [T floats]}}`, the overall
    value being the mean over all frames and the per-step value the mean over clips.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(
        self,
        num_steps: int | None = None,
        names: Iterable[str] = ("mse", "mae", "psnr", "ssim"),
        conventions: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        names = tuple(names)
        unknown = [n for n in names if n not in PER_FRAME_METRICS]
        if unknown:
            raise VidynError(
                f"unknown frame metric(s) {', '.join(unknown)}; choose from: {', '.join(PER_FRAME_METRICS)}"
            )
        if num_steps is not None and num_steps < 1:
            raise VidynError(f"num_steps must be a positive number of predicted frames; got {num_steps}")
        self.num_steps = num_steps
        self.conventions = conventions
        tracked = list(names)
        if conventions:
            tracked += [n for n in ("mse", *CONVENTIONS) if n not in tracked]
        self.tracked: tuple[str, ...] = tuple(tracked)
        size = num_steps if num_steps is not None else 0  # 0: sized at the first update
        for name in self.tracked:
            self.add_state(f"sum_{name}", torch.zeros(size, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros(size, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch of predictions and targets, `(B, T, C, H, W)` in [0, 1]."""
        check_frame_pair(pred, target)
        steps = pred.shape[1]
        if self.num_steps is None:
            if _distributed():
                raise VidynError(
                    "FrameMetrics under DDP needs num_steps: construct it as FrameMetrics(num_steps=T)"
                )
            if self.count.numel() == 0:
                for name in self.tracked:
                    setattr(self, f"sum_{name}", self.count.new_zeros(steps))
                self.count = self.count.new_zeros(steps)
        if steps != self.count.numel():
            raise VidynError(
                f"FrameMetrics is tracking {self.count.numel()} prediction steps but got a batch with "
                f"shape {tuple(pred.shape)}; use one FrameMetrics per horizon, or reset() it"
            )
        with torch.no_grad():
            values = frame_metrics(pred.detach(), target.detach(), names=self.tracked, dtype=torch.float64)
        for name, v in values.items():
            state = getattr(self, f"sum_{name}")
            setattr(self, f"sum_{name}", state + v.to(state).sum(dim=0))
        self.count = self.count + pred.shape[0]

    def compute(self) -> dict:
        """`{name: float, ..., "per_step": {name: [T floats]}}`; adds `vidode_psnr` with conventions on."""
        total = float(self.count.sum()) if self.count.numel() else 0.0
        if total == 0:
            raise VidynError("FrameMetrics has seen no frames; call update(pred, target) before compute()")
        result: dict = {"per_step": {}}
        for name in self.tracked:
            sums = getattr(self, f"sum_{name}")
            result[name] = float(sums.sum()) / total
            result["per_step"][name] = (sums / self.count).tolist()
        if self.conventions:
            mse_sums = self.sum_mse
            result["vidode_psnr"] = float(psnr_from_mse(mse_sums.sum() / total))
            result["per_step"]["vidode_psnr"] = psnr_from_mse(mse_sums / self.count).tolist()
        return result

    def _reduce_states(self, incoming_state: dict[str, Any]) -> None:
        # forward() and merge_state() add a global state to the batch state; with num_steps inferred the
        # global state is still empty (size 0) before the first batch, which would not broadcast.
        fixed = {
            k: torch.zeros_like(getattr(self, k)) if isinstance(v, Tensor) and v.numel() == 0 else v
            for k, v in incoming_state.items()
        }
        super()._reduce_states(fixed)
