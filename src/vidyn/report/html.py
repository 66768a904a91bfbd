"""Self-contained HTML reports: a results table, figures (PNG/GIF) and the protocol behind the numbers.

The page has no scripts and no external style sheets. Figures are linked by their path relative to the
page (keep them beside it, as `vidyn compare` does) or, with `embed=True`, inlined as base64 data URIs
so the page is a single portable file.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidyn.fileio import atomic_write_text

MIME = {".png": "image/png", ".gif": "image/gif", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { padding: 0.35em 0.8em; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { border-bottom: 2px solid #555; }
td.best { font-weight: bold; background: #eef6ee; }
figure { margin: 1.5em 0; }
figcaption { color: #555; font-size: 0.9em; }
img { max-width: 100%; image-rendering: pixelated; }
dl.protocol dt { font-weight: bold; margin-top: 0.4em; }
dl.protocol dd { margin-left: 1.5em; font-family: ui-monospace, monospace; font-size: 0.9em; }
"""


@dataclass(frozen=True)
class Column:
    """A table column: `key` in each row's dict, its `header`, a value `kind` and which way is better.

    kind: "metric" (4 decimals), "db" (2 decimals), "count" (k / M), "flops" (M / G), "seconds" (shown
    in ms below 1 s), "mb" (1 decimal). `better`: "max", "min" or None (no highlighting).
    """

    key: str
    header: str
    kind: str = "metric"
    better: str | None = None


def format_value(value: Any, kind: str) -> str:
    """Human-readable cell text; `-` for a missing or null value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return str(value)
    v = float(value)
    if kind == "metric":
        return f"{v:.4f}"
    if kind == "db":
        return f"{v:.2f}"
    if kind in ("count", "flops"):
        for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if abs(v) >= scale:
                return f"{v / scale:.2f} {suffix}"
        return f"{v:.0f}"
    if kind == "seconds":
        return f"{v * 1000:.1f} ms" if abs(v) < 1 else f"{v:.2f} s"
    if kind == "mb":
        return f"{v:.1f} MiB"
    return f"{v:g}"


def _best(rows: dict[str, dict[str, Any]], column: Column) -> float | None:
    values = [r.get(column.key) for r in rows.values()]
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if column.better is None or len(numbers) < 2:
        return None
    return max(numbers) if column.better == "max" else min(numbers)


def _table(columns: Sequence[Column], rows: dict[str, dict[str, Any]]) -> str:
    head = "".join(f"<th>{html.escape(c.header)}</th>" for c in columns)
    best = {c.key: _best(rows, c) for c in columns}
    body = []
    for name, row in rows.items():
        cells = [f"<td>{html.escape(name)}</td>"]
        for c in columns:
            value = row.get(c.key)
            is_best = best[c.key] is not None and isinstance(value, (int, float)) and value == best[c.key]
            cls = ' class="best"' if is_best else ""
            cells.append(f"<td{cls}>{html.escape(format_value(value, c.kind))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr><th>model</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _image_src(image: Path, page_dir: Path, embed: bool) -> str:
    if embed:
        mime = MIME.get(image.suffix.lower())
        if mime is None:
            raise ValueError(f"cannot embed {image.name}: unsupported type (use one of {', '.join(MIME)})")
        return f"data:{mime};base64,{base64.b64encode(image.read_bytes()).decode('ascii')}"
    # Relative link, with forward slashes whatever the OS, so the folder can be moved as a whole.
    return Path(os.path.relpath(image.resolve(), page_dir.resolve())).as_posix()


def _protocol(notes: dict[str, Any]) -> str:
    items = []
    for key, value in notes.items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=False)
        items.append(f"<dt>{html.escape(str(key))}</dt><dd>{html.escape(text)}</dd>")
    return f'<dl class="protocol">{"".join(items)}</dl>'


def write_html_report(
    path: str | Path,
    *,
    title: str,
    columns: Sequence[Column],
    rows: dict[str, dict[str, Any]],
    figures: Sequence[tuple[str, str | Path]] = (),
    notes: dict[str, Any] | None = None,
    intro: str = "",
    embed: bool = False,
) -> Path:
    """Write one HTML page: `intro`, the table of `rows` (model -> values), `figures` and `notes`.

    `figures` are (caption, image path) pairs; missing images raise FileNotFoundError rather than
    producing a page with broken links. The page is written to a temporary name and renamed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if intro:
        parts.append(f"<p>{html.escape(intro)}</p>")
    parts.append(_table(columns, rows))
    for caption, image in figures:
        image = Path(image)
        if not image.is_file():
            raise FileNotFoundError(f"report figure {str(image)!r} does not exist")
        src = _image_src(image, path.parent, embed)
        parts.append(
            f'<figure><img src="{html.escape(src)}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    if notes:
        parts.append("<h2>Protocol</h2>")
        parts.append(_protocol(notes))
    parts.append("</body></html>")
    return atomic_write_text(path, "\n".join(parts) + "\n")
