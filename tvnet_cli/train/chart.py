"""Training charts as PNG with Pillow (no plotting dependency): one line-chart renderer for
every loss/accuracy curve and the confusion-matrix grid of the action evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

Colour = tuple[int, int, int]


@dataclass(frozen=True)
class Series:
    """One curve: points (xs[i], ys[i]) drawn as a thin line, a thick line or dots."""

    xs: Sequence[float]
    ys: Sequence[float]
    colour: Colour
    style: str = "line"  # line | thick | dots


@dataclass(frozen=True)
class Panel:
    """A framed plot with its title; y_range None = fit the data (from 0 when all are >= 0)."""

    title: str
    series: tuple[Series, ...]
    y_range: tuple[float, float] | None = None


def running_mean(values: Sequence[float], points: int = 50) -> Series:
    """The running mean of `values` (x = 1..n) over n // points samples, as a thick blue line."""
    k = max(1, len(values) // points)
    smooth = np.convolve(values, np.ones(k) / k, mode="valid")
    return Series([i + k for i in range(len(smooth))], list(smooth), (30, 90, 200), "thick")


def line_chart(path: Path, panels: Sequence[Panel], panel_size: tuple[int, int] = (640, 360)) -> None:
    """Panels side by side, each with 5 labelled ticks per axis; x runs from 0 to the last x."""
    from PIL import Image, ImageDraw

    w, h = panel_size
    img = Image.new("RGB", (w * len(panels), h), "white")
    draw = ImageDraw.Draw(img)
    for k, panel in enumerate(panels):
        _draw_panel(draw, panel, k * w, w, h)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def _draw_panel(draw, panel: Panel, ox: int, w: int, h: int) -> None:
    left, right, top, bottom = ox + 60, ox + w - 20, 30, h - 40
    ys = [float(y) for s in panel.series for y in s.ys]
    n = max([1.0, *(float(x) for s in panel.series for x in s.xs)])
    if panel.y_range is not None:
        lo, hi = panel.y_range
    else:
        lo, hi = (min(ys), max(ys)) if ys else (0.0, 1.0)
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5, hi + 0.5
        lo = min(lo, 0.0)

    def xy(x: float, y: float) -> tuple[float, float]:
        return left + (right - left) * x / n, bottom - (bottom - top) * (y - lo) / (hi - lo)

    draw.rectangle([left, top, right, bottom], outline="black")
    for k in range(5):
        v, s = lo + (hi - lo) * k / 4, n * k / 4
        y, x = xy(0, v)[1], xy(s, lo)[0]
        draw.line([left - 4, y, left, y], fill="black")
        draw.text((ox + 4, y - 6), f"{v:.3g}", fill="black")
        draw.line([x, bottom, x, bottom + 4], fill="black")
        draw.text((x - 10, bottom + 8), f"{int(s)}", fill="black")
    for s in panel.series:
        pts = [xy(float(x), float(y)) for x, y in zip(s.xs, s.ys)]
        if s.style == "dots" or len(pts) == 1:
            for x, y in pts:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=s.colour)
        elif pts:
            draw.line(pts, fill=s.colour, width=2 if s.style == "thick" else 1)
    draw.text((left, 8), panel.title, fill="black")


def confusion_chart(matrix: np.ndarray, classes: Sequence[str], path: Path) -> None:
    """Row-normalised confusion matrix `(C, C)` as a blue grid (rows = true class, columns =
    predicted), class names beside the rows when there are at most 40."""
    from PIL import Image, ImageDraw

    n = len(classes)
    cell = max(4, min(40, 800 // max(n, 1)))
    label_w = 120 if n <= 40 else 0
    img = Image.new("RGB", (label_w + n * cell + 10, label_w // 4 + n * cell + 10), "white")
    d = ImageDraw.Draw(img)
    rows = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    top = label_w // 4
    for i in range(n):
        if label_w:
            d.text((2, top + i * cell + cell // 2 - 5), classes[i][:18], fill="black")
        for j in range(n):
            v = int(255 * (1 - rows[i, j]))
            x, y = label_w + j * cell, top + i * cell
            d.rectangle((x, y, x + cell - 1, y + cell - 1), fill=(v, v, 255))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
