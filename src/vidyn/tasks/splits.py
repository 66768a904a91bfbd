"""Cutting clips into context and targets (the prediction modes), and ODE solver statistics.

Shared by the prediction task (training splits), the evaluators (the same splits at test time) and the
comparison profiler, so a mode means the same thing everywhere.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vidyn.errors import VidynError

MODES = ("extrapolate", "interpolate", "irregular")
CONTINUOUS_MODES = ("interpolate", "irregular")  # modes that need a continuous-time model
EVAL_SPLIT_SEED = 0  # the `irregular` split used when no generator is given (validation, evaluation)


def irregular_split(
    span: int, num_context: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Sorted (observed, target) indices of the `irregular` mode over the first `span` frames of a clip.

    Frame 0 is always observed (predictors answer at or after their first observation); the last observed
    frame L is drawn uniformly from `num_context - 1 .. span - 1` and the other `num_context - 2` observed
    frames uniformly without replacement between them. Every other frame is a target: those before L are
    interpolation targets, those after it (0 to `span - num_context` of them, uniformly) extrapolation
    targets. `generator=None` uses a fixed seed, so evaluation sees the same split every time.
    """
    if not 1 <= num_context < span:
        raise VidynError(
            f"irregular mode needs 1 <= num_context < num_context + num_future; got {num_context} of {span}"
        )
    gen = generator if generator is not None else torch.Generator().manual_seed(EVAL_SPLIT_SEED)
    observed = torch.zeros(span, dtype=torch.bool)
    observed[0] = True
    if num_context > 1:
        last = int(torch.randint(num_context - 1, span, (1,), generator=gen))
        observed[last] = True
        observed[torch.randperm(last - 1, generator=gen)[: num_context - 2] + 1] = True
    return observed.nonzero().squeeze(1), (~observed).nonzero().squeeze(1)


def split_indices(
    num_frames: int, num_context: int, num_future: int, mode: str, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Clip indices (context, targets) of a prediction mode; see `split_clip`."""
    if mode == "extrapolate":
        if num_context + num_future > num_frames:
            raise VidynError(
                f"clips have {num_frames} frames but num_context + num_future = {num_context + num_future}; "
                "lower them or raise the dataset's num_frames"
            )
        return torch.arange(num_context), torch.arange(num_context, num_context + num_future)
    if mode == "interpolate":
        span = 2 * num_context - 1
        if span > num_frames:
            raise VidynError(f"interpolation with {num_context} observed frames needs clips of {span} frames")
        return torch.arange(0, span, 2), torch.arange(1, span, 2)
    if mode == "irregular":
        if num_context + num_future > num_frames:
            raise VidynError(
                f"irregular mode draws from the first num_context + num_future = {num_context + num_future} "
                f"frames but clips have {num_frames}; lower them or raise the dataset's num_frames"
            )
        return irregular_split(num_context + num_future, num_context, generator)
    raise VidynError(f"unknown prediction mode {mode!r}; choose one of: {', '.join(MODES)}")


def split_clip(
    frames: Tensor,
    times: Tensor,
    num_context: int,
    num_future: int,
    mode: str,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Cut a clip `(B, T, C, H, W)` with times `(B, T)` into (context, context_times, target, target_times).

    extrapolate: the first num_context frames predict the next num_future.
    interpolate: Vid-ODE's protocol — observe the even frames of the first 2*num_context - 1 frames and
    predict the odd ones between them (num_future is then num_context - 1).
    irregular: Vid-ODE's irregular sampling — among the first num_context + num_future frames (at the
    clip's own, possibly irregular, timestamps) a random subset of num_context frames, always holding frame
    0, is observed and the other num_future frames are predicted, both between observations and after the
    last one (`irregular_split`; one subset per call, shared by the batch, drawn from `generator`, or a
    fixed one when it is None). Targets are in time order in every mode.
    """
    ctx, tgt = split_indices(frames.shape[1], num_context, num_future, mode, generator)
    return frames[:, ctx], times[:, ctx], frames[:, tgt], times[:, tgt]


def solver_stats(model: nn.Module, context_times: Tensor, target_times: Tensor) -> dict[str, float] | None:
    """ODE function evaluations of the model's last forward, per clip and per predicted frame.

    For models that count them in `last_nfe = {"encoder": n, "decoder": m}` (Vid-ODE), summed over the
    solves of one forward. Vid-ODE solves together the clips whose times relative to their first context
    time are equal (one solve for a regular grid, one per clip for irregular clips), so the NFE of one clip
    is the sum divided by the number of such groups. Returns `{"nfe_encoder", "nfe_decoder"}` per clip,
    `"nfe_per_frame"` = (encoder + decoder) per clip / predicted frames, and `"solves"`; None for models
    without `last_nfe`.
    """
    nfe = getattr(model, "last_nfe", None)
    if not isinstance(nfe, dict):
        return None
    ctx = context_times if context_times.dim() == 2 else context_times.unsqueeze(0)
    tgt = target_times if target_times.dim() == 2 else target_times.unsqueeze(0)
    tgt = tgt.expand(ctx.shape[0], -1)
    t0 = ctx[:, :1].double()
    rel = torch.cat(
        [(ctx.double() - t0).float(), (tgt.double() - t0).float()], dim=1
    )  # as such models group their solves
    solves = int(torch.unique(rel, dim=0).shape[0])
    enc, dec = nfe.get("encoder", 0) / solves, nfe.get("decoder", 0) / solves
    return {
        "nfe_encoder": enc,
        "nfe_decoder": dec,
        "nfe_per_frame": (enc + dec) / max(1, tgt.shape[1]),
        "solves": float(solves),
    }


def frame_grid(times: Tensor) -> Tensor:
    """A clip's frames on a regular grid `(B, T)`: `t_0 + k * median interval`, row by row.

    What a discrete-time model is given: it predicts frame steps, not seconds, and the presentation
    timestamps of real videos jitter (variable frame rate, dropped frames) although the frames are
    consecutive. Regularly sampled clips (shapes, Moving MNIST) are returned unchanged up to rounding.
    """
    if times.shape[1] < 2:
        return times
    step = times.diff(dim=1).median(dim=1, keepdim=True).values  # (B, 1)
    k = torch.arange(times.shape[1], device=times.device, dtype=times.dtype)
    return times[:, :1] + step * k  # (B, T)


def times_for(model: nn.Module, times: Tensor) -> Tensor:
    """The clip times `model` is given: as they are for a continuous-time model, else `frame_grid`."""
    return times if getattr(model, "continuous_time", False) else frame_grid(times)
