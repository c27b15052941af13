"""A zero-dependency PNG line chart: numpy rasterises, zlib compresses, struct frames the chunks.

Good enough for an accuracy-per-round plot without pulling matplotlib into the test extra: axes,
a light grid with tick labels, one coloured polyline (with dots at the points) per series, and a
legend, drawn with a built-in 5x7 pixel font of upper-case letters, digits and a few symbols.
"""

from __future__ import annotations

import itertools
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# 5x7 glyphs, one string of 7 rows of 5 pixels each ('#' on). Lower case is drawn upper case.
_GLYPHS: dict[str, str] = {
    " ": ".....|.....|.....|.....|.....|.....|.....",
    "0": ".###.|#...#|#..##|#.#.#|##..#|#...#|.###.",
    "1": "..#..|.##..|..#..|..#..|..#..|..#..|.###.",
    "2": ".###.|#...#|....#|...#.|..#..|.#...|#####",
    "3": "#####|...#.|..#..|...#.|....#|#...#|.###.",
    "4": "...#.|..##.|.#.#.|#..#.|#####|...#.|...#.",
    "5": "#####|#....|####.|....#|....#|#...#|.###.",
    "6": "..##.|.#...|#....|####.|#...#|#...#|.###.",
    "7": "#####|....#|...#.|..#..|.#...|.#...|.#...",
    "8": ".###.|#...#|#...#|.###.|#...#|#...#|.###.",
    "9": ".###.|#...#|#...#|.####|....#|...#.|.##..",
    ".": ".....|.....|.....|.....|.....|.##..|.##..",
    "-": ".....|.....|.....|#####|.....|.....|.....",
    "_": ".....|.....|.....|.....|.....|.....|#####",
    "(": "...#.|..#..|.#...|.#...|.#...|..#..|...#.",
    ")": ".#...|..#..|...#.|...#.|...#.|..#..|.#...",
    "/": ".....|....#|...#.|..#..|.#...|#....|.....",
    "%": "##...|##..#|...#.|..#..|.#...|#..##|...##",
    "=": ".....|.....|#####|.....|#####|.....|.....",
    ",": ".....|.....|.....|.....|.##..|..#..|.#...",
    ":": ".....|.##..|.##..|.....|.##..|.##..|.....",
    "A": ".###.|#...#|#...#|#####|#...#|#...#|#...#",
    "B": "####.|#...#|#...#|####.|#...#|#...#|####.",
    "C": ".###.|#...#|#....|#....|#....|#...#|.###.",
    "D": "###..|#..#.|#...#|#...#|#...#|#..#.|###..",
    "E": "#####|#....|#....|####.|#....|#....|#####",
    "F": "#####|#....|#....|####.|#....|#....|#....",
    "G": ".###.|#...#|#....|#.###|#...#|#...#|.####",
    "H": "#...#|#...#|#...#|#####|#...#|#...#|#...#",
    "I": ".###.|..#..|..#..|..#..|..#..|..#..|.###.",
    "J": "..###|...#.|...#.|...#.|...#.|#..#.|.##..",
    "K": "#...#|#..#.|#.#..|##...|#.#..|#..#.|#...#",
    "L": "#....|#....|#....|#....|#....|#....|#####",
    "M": "#...#|##.##|#.#.#|#.#.#|#...#|#...#|#...#",
    "N": "#...#|#...#|##..#|#.#.#|#..##|#...#|#...#",
    "O": ".###.|#...#|#...#|#...#|#...#|#...#|.###.",
    "P": "####.|#...#|#...#|####.|#....|#....|#....",
    "Q": ".###.|#...#|#...#|#...#|#.#.#|#..#.|.##.#",
    "R": "####.|#...#|#...#|####.|#.#..|#..#.|#...#",
    "S": ".####|#....|#....|.###.|....#|....#|####.",
    "T": "#####|..#..|..#..|..#..|..#..|..#..|..#..",
    "U": "#...#|#...#|#...#|#...#|#...#|#...#|.###.",
    "V": "#...#|#...#|#...#|#...#|#...#|.#.#.|..#..",
    "W": "#...#|#...#|#...#|#.#.#|#.#.#|#.#.#|.#.#.",
    "X": "#...#|#...#|.#.#.|..#..|.#.#.|#...#|#...#",
    "Y": "#...#|#...#|.#.#.|..#..|..#..|..#..|..#..",
    "Z": "#####|....#|...#.|..#..|.#...|#....|#####",
}
_FONT = {
    ch: np.array([[c == "#" for c in row] for row in rows.split("|")], dtype=bool)
    for ch, rows in _GLYPHS.items()
}

Color = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class LineSeries:
    label: str
    values: Sequence[float]
    color: Color


class _Canvas:
    def __init__(self, width: int, height: int) -> None:
        self.px = np.full((height, width, 3), 255, dtype=np.uint8)

    def rect(self, x0: int, y0: int, x1: int, y1: int, color: Color) -> None:
        h, w = self.px.shape[:2]
        xa, xb = sorted((max(0, x0), min(w, x1)))
        ya, yb = sorted((max(0, y0), min(h, y1)))
        self.px[ya:yb, xa:xb] = color

    def line(self, x0: float, y0: float, x1: float, y1: float, color: Color, width: int) -> None:
        steps = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
        r = width // 2
        for t in np.linspace(0.0, 1.0, steps + 1):
            x = round(x0 + (x1 - x0) * t)
            y = round(y0 + (y1 - y0) * t)
            self.rect(x - r, y - r, x - r + width, y - r + width, color)

    def text(self, x: int, y: int, s: str, color: Color, scale: int = 2) -> None:
        for i, ch in enumerate(s.upper()):
            glyph = _FONT.get(ch, _FONT[" "])
            for gy, gx in zip(*np.nonzero(glyph), strict=True):
                px = x + (i * 6 + gx) * scale
                py = y + gy * scale
                self.rect(px, py, px + scale, py + scale, color)


def text_width(s: str, scale: int = 2) -> int:
    return len(s) * 6 * scale


def encode_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an ``(h, w, 3)`` uint8 image: 8-bit RGB, filter 0 on every row."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError("expected an (h, w, 3) uint8 array")
    h, w = rgb.shape[:2]

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    raw = np.concatenate([np.zeros((h, 1), np.uint8), rgb.reshape(h, w * 3)], axis=1)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw.tobytes(), 9))
        + chunk(b"IEND", b"")
    )


def render_line_chart(
    series: Sequence[LineSeries],
    *,
    y_range: tuple[float, float] = (0.0, 1.0),
    x_label: str = "round",
    width: int = 800,
    height: int = 500,
) -> np.ndarray:
    """The chart as an RGB array; x runs over 1..len(values) of the longest series."""
    if not series or not any(len(s.values) for s in series):
        raise ValueError("nothing to plot")
    c = _Canvas(width, height)
    left, right, top, bottom = 80, width - 20, 20, height - 60
    y_lo, y_hi = y_range
    n = max(len(s.values) for s in series)

    def sx(i: float) -> float:
        return left + (right - left) * ((i - 1) / max(1, n - 1))

    def sy(v: float) -> float:
        v = min(max(v, y_lo), y_hi)
        return bottom - (bottom - top) * (v - y_lo) / (y_hi - y_lo)

    grey, dark = (225, 225, 225), (40, 40, 40)
    for k in range(11):
        v = y_lo + (y_hi - y_lo) * k / 10
        y = round(sy(v))
        c.rect(left, y, right, y + 1, grey)
        label = f"{v:.1f}"
        c.text(left - 8 - text_width(label), y - 7, label, dark)
    tick_every = max(1, round(n / 10))
    for i in range(1, n + 1):
        if i % tick_every and i not in (1, n):
            continue
        x = round(sx(i))
        c.rect(x, bottom, x + 1, bottom + 6, dark)
        c.text(x - text_width(str(i)) // 2, bottom + 10, str(i), dark)
    c.rect(left, top, left + 2, bottom + 1, dark)
    c.rect(left, bottom, right + 1, bottom + 2, dark)
    c.text((left + right) // 2 - text_width(x_label) // 2, bottom + 34, x_label, dark)
    for s in series:
        pts = [(sx(i + 1), sy(v)) for i, v in enumerate(s.values)]
        for (x0, y0), (x1, y1) in itertools.pairwise(pts):
            c.line(x0, y0, x1, y1, s.color, 3)
        for x, y in pts:
            c.rect(round(x) - 3, round(y) - 3, round(x) + 4, round(y) + 4, s.color)
    # Legend in the lower right, where accuracy curves rarely are.
    ly = bottom - 24 * len(series) - 10
    for s in series:
        lx = right - text_width(s.label) - 40
        c.rect(lx, ly + 5, lx + 24, ly + 9, s.color)
        c.text(lx + 30, ly, s.label, dark)
        ly += 24
    return c.px


def write_line_chart(path: Path, series: Sequence[LineSeries], **kwargs: object) -> None:
    path.write_bytes(encode_png(render_line_chart(series, **kwargs)))  # type: ignore[arg-type]
