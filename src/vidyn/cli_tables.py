"""Fixed-width text tables the `vidyn` commands print (the UI and the HTML report show the same cells)."""

from __future__ import annotations

from typing import Any

METRIC_COLUMNS = ("ssim", "psnr", "mse", "mae", "lpips", "top1", "top5")
GENERATION_COLUMNS = ("temporal_ssim", "nearest_real_ssim", "frame_change", "spread", "fd_judge")
PER_CLASS_COLUMNS = ("spread", "real_spread", "nearest_real_ssim", "temporal_ssim", "frame_change")


def format_table(models: dict[str, dict[str, Any]], columns: tuple[str, ...] = METRIC_COLUMNS) -> str:
    """A fixed-width table of `models`' metrics; a model scored nowhere (only a `reason`) reads n/a, with
    its reason below the table."""
    cols = [c for c in columns if any(isinstance(m.get(c), (int, float)) for m in models.values())]
    if not cols and columns == METRIC_COLUMNS:  # generators: their own columns
        cols = [
            c for c in GENERATION_COLUMNS if any(isinstance(m.get(c), (int, float)) for m in models.values())
        ]
    width = max([5] + [len(n) for n in models])
    w = {c: max(9, len(c)) for c in cols}
    lines = [f"{'model':<{width}}  " + "  ".join(f"{c:>{w[c]}}" for c in cols)]
    notes = []
    for name, res in models.items():
        cells = []
        for c in cols:
            v = res.get(c)
            blank = "n/a" if res.get("reason") else "-"
            cells.append(f"{v:>{w[c]}.4f}" if isinstance(v, (int, float)) else f"{blank:>{w[c]}}")
        lines.append(f"{name:<{width}}  " + "  ".join(cells))
        if res.get("reason"):
            notes.append(f"  n/a {name}: {res['reason']}")
    return "\n".join(lines + notes)


def format_per_class(per_class: dict[str, dict[str, Any]]) -> str:
    """The table of a class-conditional generator's samples per prompt (`per_class` of its evaluation)
    under a heading with N: is one prompt's variety (`spread`) near its real clips' (`real_spread`)?"""
    n = next(iter(per_class.values())).get("num_clips", "?")
    heading = f"\nper prompt ({n} samples each; real_spread: the spread of that class's real clips):"
    return heading + "\n" + format_table(per_class, PER_CLASS_COLUMNS)


def format_compare_table(models: dict[str, dict[str, Any]]) -> str:
    """The `vidyn compare` table: quality (SSIM, PSNR, MSE, MAE, LPIPS), then params, FLOPs and timings;
    the same cells as the HTML report and the web UI."""
    from vidyn.api.comparison import compare_table  # noqa: PLC0415  (torch: only when printing one)

    headers, rows = compare_table(models)
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for row in [headers, *rows]:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells))
    return "\n".join(lines)
