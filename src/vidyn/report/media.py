"""Grids with labelled columns: animated comparisons (context | truth | each model, one row per clip) and
still grids of sampled clips (one row per clip, columns labelled with their times)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from vidyn.data.video_io import write_video
from vidyn.fileio import atomic_path
from vidyn.report.labels import with_column_labels

CONTEXT_BORDER = (0.2, 0.5, 1.0)  # blue frame: observed input
TRUTH_BORDER = (0.25, 0.8, 0.3)  # green frame: what really came next
PREDICT_BORDER = (1.0, 0.35, 0.2)  # red frame: model output
WAIT_BORDER = (0.35, 0.35, 0.35)  # grey: nothing to show yet (the model has not started)
WAIT_FILL = 0.12
BORDER = 2
MIN_CELL = 96  # pixels: smaller frames are enlarged so their column labels stay readable


def to_display(frames: Tensor, cell: int) -> Tensor:
    """`(T, C, H, W)` in [0, 1], any size and C in {1, 3} -> `(T, 3, cell, cell)` for showing side by side.

    Enlarged by an integer factor with nearest-neighbour (each model pixel stays a crisp square), resized
    antialiased otherwise; grayscale is repeated into RGB.
    """
    x = frames.float().clamp(0, 1)
    x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
    h, w = x.shape[-2:]
    if (h, w) == (cell, cell):
        return x
    if h == w and cell % h == 0:
        return F.interpolate(x, size=(cell, cell), mode="nearest")
    x = F.interpolate(x, size=(cell, cell), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp(0, 1)


def _bordered(frames: Tensor, colour: tuple[float, float, float], width: int = BORDER) -> Tensor:
    """(T, 3, H, W) -> (T, 3, H + 2w, W + 2w) with a coloured border."""
    T, _, H, W = frames.shape
    out = torch.tensor(colour, dtype=frames.dtype).view(1, 3, 1, 1).repeat(T, 1, H + 2 * width, W + 2 * width)
    out[:, :, width : width + H, width : width + W] = frames
    return out


def _column(head: Tensor, head_colour: tuple, tail: Tensor, tail_colour: tuple) -> Tensor:
    return torch.cat([_bordered(head, head_colour), _bordered(tail, tail_colour)], dim=0)


def comparison_frames(
    context: Tensor,
    truth: Tensor | None,
    preds: dict[str, Tensor],
    *,
    labels: dict[str, str] | None = None,
    cell: int | None = None,
) -> Tensor:
    """Build the labelled animation for a batch of clips.

    context `(N, Tc, C, H, W)`, truth `(N, Tf, C, H, W)` or None, preds name -> `(N, Tf, C_k, H_k, W_k)`
    (each model at its own size and channels). Every frame is shown at `cell` x `cell` (default: the
    context's size, at least MIN_CELL). Returns `(Tc + Tf, 3, band + N (cell + 4), K (cell + 4))`, columns
    labelled "context", "truth" (when given), then each model (`labels[name]`, default the name). The
    context column plays the observed frames (blue) then holds the last one; truth (green) and the models
    (red) are dark while the context plays and then show what came next / what each model predicted.
    """
    n, tc = context.shape[:2]
    tf = next(iter(preds.values())).shape[1] if preds else (truth.shape[1] if truth is not None else 0)
    cell = cell or max(MIN_CELL, context.shape[-1])
    shown = {"context": None, **({"truth": truth} if truth is not None else {}), **preds}
    columns = []
    for name, frames in shown.items():
        rows = []
        for i in range(n):
            ctx = to_display(context[i], cell)
            if name == "context":
                rows.append(_column(ctx, CONTEXT_BORDER, ctx[-1:].expand(tf, -1, -1, -1), CONTEXT_BORDER))
                continue
            wait = torch.full((tc, 3, cell, cell), WAIT_FILL)
            colour = TRUTH_BORDER if name == "truth" else PREDICT_BORDER
            rows.append(_column(wait, WAIT_BORDER, to_display(frames[i], cell), colour))
        columns.append(torch.cat(rows, dim=2))  # stack clips vertically: (T, 3, N*(cell+4), cell+4)
    grid = torch.cat(columns, dim=3)  # side by side: (T, 3, N*(cell+4), K*(cell+4))
    names = [(labels or {}).get(k, k) for k in shown]
    return with_column_labels(grid, names, [cell + 2 * BORDER] * len(names))


def write_comparison(
    path: str | Path,
    context: Tensor,
    truth: Tensor | None,
    preds: dict[str, Tensor],
    fps: float = 4.0,
    scale: int = 2,
    labels: dict[str, str] | None = None,
    cell: int | None = None,
) -> Path:
    """`comparison_frames` written as a video (GIF, MP4, ...); cells `scale` times the context's size
    (at least MIN_CELL pixels) unless `cell` is given."""
    cell = cell or max(MIN_CELL, context.shape[-1] * scale)
    write_video(path, comparison_frames(context, truth, preds, labels=labels, cell=cell), fps=fps)
    return Path(path)


def write_labelled_grid(
    clips: Tensor, times: Tensor, path: str | Path, max_frames: int = 16, min_cell: int = 64
) -> Path:
    """A PNG of clips `(N, T, C, H, W)`: one row per clip, at most `max_frames` evenly spaced frames as
    columns, each labelled with its time (`times (T,)`, seconds); frames smaller than `min_cell` pixels are
    enlarged so the labels stay readable."""
    t, h = clips.shape[1], clips.shape[3]
    cols = torch.linspace(0, t - 1, min(t, max_frames)).round().long()
    cell = max(min_cell, h)
    rows = [torch.cat([to_display(clip[cols], cell)[k] for k in range(len(cols))], dim=2) for clip in clips]
    image = torch.cat(rows, dim=1).unsqueeze(0)  # (1, 3, N cell, k cell)
    labels = [f"t={float(times[int(c)]):.2f} s" for c in cols]
    image = with_column_labels(image, labels, [cell] * len(cols))[0]
    pixels = image.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()  # (H, W, 3)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(pixels, mode="RGB").save(tmp, format="PNG")
    return Path(path)
