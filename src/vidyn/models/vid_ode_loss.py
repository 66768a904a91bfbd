"""Vid-ODE's training losses: the paper's reconstruction loss and two optional terms for its
`interpolation="bidirectional"` option (`vidyn.models.vid_ode`). `training_loss` combines them; the model
exposes it as its own loss (`VidODE.training_loss`), which the prediction task calls with `loss: model`
and `loss_args: {warp_weight, pyramid_scales}`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidyn.errors import VidynError


def vid_ode_reconstruction_loss(
    pred: Tensor,
    target: Tensor,
    start_frame: Tensor | None = None,
    difference: Tensor | None = None,
    chain_start: Tensor | None = None,
) -> Tensor:
    """Vid-ODE's reconstruction loss: `mean|pred - target| + mean|D - dX|` over targets in time order.

    `dX_k = target_k - target_{k-1}`, where the frame before the first target (and before every target
    with `chain_start[:, k]` True) is `start_frame`: `(B, C, H, W)`, or `(B, K, C, H, W)` per target as
    `forward_components` returns it; without `start_frame` the first difference is dropped. `D` is the
    model's `difference` output (the paper and official code); if it is None, the difference of the
    predictions themselves, with the same start frames, is used instead.
    """
    loss = F.l1_loss(pred, target)
    if start_frame is None:
        if target.shape[1] < 2:
            return loss
        true_diff = target.diff(dim=1)
        pred_diff = difference[:, 1:] if difference is not None else pred.diff(dim=1)
        return loss + F.l1_loss(pred_diff, true_diff)
    if start_frame.dim() == 4:
        start_frame = start_frame.unsqueeze(1).expand_as(target)
    prev_true = torch.cat([start_frame[:, :1], target[:, :-1]], dim=1)
    prev_pred = torch.cat([start_frame[:, :1], pred[:, :-1]], dim=1)
    if chain_start is not None:
        sel = chain_start.view(*chain_start.shape, 1, 1, 1)
        prev_true = torch.where(sel, start_frame, prev_true)
        prev_pred = torch.where(sel, start_frame, prev_pred)
    pred_diff = difference if difference is not None else pred - prev_pred
    return loss + F.l1_loss(pred_diff, target - prev_true)


def pyramid_l1(pred: Tensor, target: Tensor, scales: tuple[int, ...] | list[int]) -> Tensor:
    """Sum over `scales` k of the L1 between `k x k` average-pooled frames `(..., C, H, W)` (0 if none).

    A pooled frame moves by a fraction of a pixel where the full-resolution one moves by several, so these
    terms give a warp's flow a gradient towards motions larger than the blur of an edge (coarse-to-fine).
    """
    loss = pred.new_zeros(())
    flat_pred, flat_target = pred.flatten(0, -4), target.flatten(0, -4)  # (N, C, H, W)
    for k in scales:
        loss = loss + F.l1_loss(F.avg_pool2d(flat_pred, k), F.avg_pool2d(flat_target, k))
    return loss


def bidirectional_warp_loss(
    parts: dict[str, Tensor], target: Tensor, scales: tuple[int, ...] | list[int] = ()
) -> Tensor:
    """Super SloMo's warping loss (Jiang et al., CVPR 2018) on `interpolation="bidirectional"` outputs:
    `|target - warp(x_a, F_a)| + |target - warp(x_b, F_b)|` at full resolution and at the `pyramid_l1`
    `scales`, averaged over all targets with 0 where a target has no next observation.

    It trains each flow to explain the target on its own, where the composition would let the mask, the
    visibility and D absorb the error instead.
    """
    if "warped_b" not in parts:
        raise VidynError("the warping loss needs a vid_ode model with interpolation=bidirectional")
    keep = parts["two_sided"].view(*parts["two_sided"].shape, 1, 1, 1).to(target.dtype)  # (B, K, 1, 1, 1)
    loss = target.new_zeros(())
    for side in ("warped_a", "warped_b"):
        pred, truth = parts[side] * keep, target * keep
        loss = loss + F.l1_loss(pred, truth) + pyramid_l1(pred, truth, scales)
    return loss


def check_loss_args(interpolation: str, warp_weight: float, pyramid_scales: Sequence[int]) -> None:
    """Refuse loss arguments that cannot work, before training starts."""
    if warp_weight < 0 or any(not isinstance(k, int) or k < 2 for k in pyramid_scales):
        raise VidynError(
            f"loss_args warp_weight must be >= 0 and pyramid_scales integers >= 2; got {warp_weight}, "
            f"{list(pyramid_scales)}"
        )
    if warp_weight > 0 and interpolation != "bidirectional":
        raise VidynError(
            "loss_args warp_weight needs interpolation=bidirectional (set "
            "model.args.interpolation=bidirectional or task.args.loss_args.warp_weight=0)"
        )


def training_loss(
    model: nn.Module,
    context: Tensor,
    context_times: Tensor,
    target: Tensor,
    target_times: Tensor,
    *,
    warp_weight: float = 0.0,
    pyramid_scales: Sequence[int] = (),
) -> tuple[Tensor, Tensor]:
    """(predicted frames, loss): the paper's reconstruction loss on the model's components, plus L1 on
    average-pooled frames at `pyramid_scales` and `warp_weight` times the warping loss (both optional)."""
    parts = model.forward_components(context, context_times, target_times)
    pred = parts["frames"]
    loss = vid_ode_reconstruction_loss(
        pred, target, parts["start_frame"], parts["difference"], parts["chain_start"]
    ) + pyramid_l1(pred, target, tuple(pyramid_scales))
    if warp_weight > 0:
        loss = loss + warp_weight * bidirectional_warp_loss(parts, target, tuple(pyramid_scales))
    return pred, loss
