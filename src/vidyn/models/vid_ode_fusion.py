"""Vid-ODE's `interpolation="bidirectional"` option (not in the paper; `vidyn.models.vid_ode` explains it):
the time-scaled, gated decoder terms of a target between two observations, and the recursive warping
along each chain with Super SloMo's fusion of both warped neighbours (Jiang et al., CVPR 2018, eq. 1)."""

from __future__ import annotations

import torch
from torch import Tensor

from vidyn.nn.warp import warp


def two_sided_terms(
    out: Tensor, c: int, two_sided: Tensor, t: Tensor, t_a: Tensor, t_b: Tensor, velocity_unit: float,
    blend_time: float,
) -> dict[str, Tensor]:  # fmt: skip
    """Bidirectional terms `(B, K, ...)` from the decoder output `out`: flows (to a, to b), mask,
    visibility and tau, time-scaled and gated as the module docstring says (arbitrary where a target is
    not `two_sided`)."""
    b, k = two_sided.shape
    d_a = torch.where(two_sided, t - t_a, 0.0).view(b, k, 1, 1, 1)  # seconds since a
    d_b = torch.where(two_sided, t_b - t, 0.0).view(b, k, 1, 1, 1)  # seconds until b
    if blend_time > 0:
        gate = 1 - torch.exp(-torch.minimum(d_a, d_b) / blend_time)
    else:
        gate = torch.ones_like(d_a)
    flow_scale = gate / velocity_unit
    return {
        "flow": torch.where(two_sided.view(b, k, 1, 1, 1), out[:, :, :2] * d_a * flow_scale, out[:, :, :2]),
        "flow_back": out[:, :, 3 + c : 5 + c] * d_b * flow_scale,
        "mask": 1 - gate * (1 - torch.sigmoid(out[:, :, 2 + c : 3 + c])),
        "visible": 0.5 + gate * (torch.sigmoid(out[:, :, 5 + c :]) - 0.5),
        "tau": (d_a / (d_a + d_b).clamp_min(1e-12)).view(b, k),
    }


def warp_chains(
    start: Tensor, flow: Tensor, chain_start: Tensor, two_sided: Tensor | None, side: dict | None, end: Tensor
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Frames warped recursively along each chain, `(B, K, C, H, W)`; with `side` (bidirectional) fused
    with the next observation warped back where a target lies between two (Super SloMo), and each
    neighbour's warp on its own (`warped_a`, `warped_b`)."""
    b, k = chain_start.shape
    warped, warped_a, warped_b = [], [], []
    for i in range(k):
        restart = chain_start[:, i] if two_sided is None else chain_start[:, i] | two_sided[:, i]
        src = start[:, i] if i == 0 else torch.where(restart.view(b, 1, 1, 1), start[:, i], warped[-1])
        frame = warp(src, flow[:, i])
        if side is not None:
            warped_a.append(frame)
            from_b = frame  # where no row has a next observation there is nothing to fuse
            if bool(two_sided[:, i].any()):
                from_b = warp(end[:, i], side["flow_back"][:, i])
                w_a = (1 - side["tau"][:, i]).view(b, 1, 1, 1) * side["visible"][:, i]
                w_b = side["tau"][:, i].view(b, 1, 1, 1) * (1 - side["visible"][:, i])
                fused = (w_a * frame + w_b * from_b) / (w_a + w_b + 1e-6)
                frame = torch.where(two_sided[:, i].view(b, 1, 1, 1), fused, frame)
            warped_b.append(from_b)
        warped.append(frame)
    if side is None:
        return torch.stack(warped, dim=1), None, None
    return torch.stack(warped, dim=1), torch.stack(warped_a, dim=1), torch.stack(warped_b, dim=1)
