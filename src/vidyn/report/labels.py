"""Column labels drawn into the pixels of every grid vidyn writes (UI, samples.gif, compare, generate).

A label band is rendered once with Pillow's built-in font (no font file is read or fetched) and stacked
above every frame, so the labels survive any player, GIF viewer or screenshot.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

BAND_BACKGROUND = (24, 24, 24)
TEXT_COLOUR = (240, 240, 240)
DIVIDER_COLOUR = (90, 90, 90)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow's embedded scalable font (FreeType builds)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> str:
    """`text`, shortened with an ellipsis until it fits `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _font_size(width: int) -> int:
    return int(min(14, max(8, width // 9)))


def band_height(widths: list[int], lines: int) -> int:
    """Height in pixels of the band `label_band` draws for columns of these widths."""
    return lines * (_font_size(min(widths)) + 3) + 4


def label_band(labels: list[str], widths: list[int], lines: int | None = None) -> Tensor:
    """A `(3, h, sum(widths))` float image in [0, 1]: each label centred over its column.

    A label holds up to `lines` lines (split on newlines; default: as many as the longest label has);
    each line is shortened with an ellipsis to fit its column.
    """
    if len(labels) != len(widths) or not widths:
        raise ValueError(f"{len(labels)} labels for {len(widths)} columns")
    lines = lines or max(len(text.split("\n")) for text in labels)
    size = _font_size(min(widths))
    font = _font(size)
    height = band_height(widths, lines)
    image = Image.new("RGB", (int(sum(widths)), height), BAND_BACKGROUND)
    draw = ImageDraw.Draw(image)
    left = 0
    for text, width in zip(labels, widths, strict=True):
        for row, line in enumerate(text.split("\n")[:lines]):
            line = _fit(draw, line, font, width - 4)
            x = left + (width - draw.textlength(line, font=font)) / 2
            draw.text((x, 2 + row * (size + 3)), line, fill=TEXT_COLOUR, font=font)
        if left:
            draw.line([(left, 0), (left, height - 1)], fill=DIVIDER_COLOUR)
        left += width
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float().div_(255.0)


def with_column_labels(frames: Tensor, labels: list[str], widths: list[int] | None = None) -> Tensor:
    """Frames `(T, C, H, W)` in [0, 1] -> `(T, 3, H + band, W)` with `labels` drawn above the columns.

    `widths`: each column's width in pixels (default: `W` split evenly among the labels).
    """
    t, c, _, w = frames.shape
    if widths is None:
        widths = [w // len(labels)] * len(labels)
        widths[-1] += w - sum(widths)
    if sum(widths) != w:
        raise ValueError(f"column widths {widths} do not add up to the frame width {w}")
    rgb = frames.expand(-1, 3, -1, -1) if c == 1 else frames
    band = label_band(labels, widths).to(rgb.dtype).unsqueeze(0).expand(t, -1, -1, -1)  # (T, 3, h, W)
    return torch.cat([band, rgb], dim=2)
