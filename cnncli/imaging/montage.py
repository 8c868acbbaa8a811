"""Montages that explain themselves: tiles with a label above each (a channel's number and its
largest value), visible separators, pictures packed at their own aspect, titles that can be
read (fonts from cnncli.imaging.figure, at least LABEL_SIZE pixels).

Every function returns uint8 [H, W, 3]; nothing here writes a file or prints.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

LABEL_SIZE = 12  # pixels: a tile's label
MIN_LABEL_SIZE = 9  # a label too long for its tile is drawn smaller, down to this, before it is cut
TITLE_SIZE = 16  # pixels: a picture's title
INK = (20, 20, 20)


def _label_height(size: int) -> int:
    return size + 5


def _ink_for(bg: int) -> tuple[int, int, int]:
    return (235, 235, 235) if bg < 128 else INK


def labelled_grid(tiles: Sequence[np.ndarray], labels: Sequence[str] | None, cols: int, tile: int, gap: int = 6,
                  bg: int = 255, label_size: int = LABEL_SIZE) -> np.ndarray:
    """Tiles (any sizes, scaled so their longer side is ``tile``) ``cols`` to a row, ``gap``
    pixels of ``bg`` between them, each under its label (shortened in the middle to the tile's
    width); no label strip when ``labels`` is None."""
    from PIL import Image, ImageDraw

    from cnncli.imaging.figure import fit_text, font
    from cnncli.imaging.pictures import resize_tile

    cols = max(1, cols)
    rows = max(1, -(-len(tiles) // cols))
    lh = _label_height(label_size) if labels is not None else 0
    cell_h = lh + tile
    out = np.full((rows * cell_h + (rows - 1) * gap, cols * tile + (cols - 1) * gap, 3), bg, dtype=np.uint8)
    for i, t in enumerate(tiles):
        t = resize_tile(t, tile)
        r, c = divmod(i, cols)
        y = r * (cell_h + gap) + lh + (tile - t.shape[0]) // 2
        x = c * (tile + gap) + (tile - t.shape[1]) // 2
        out[y:y + t.shape[0], x:x + t.shape[1]] = t
    if labels is None:
        return out
    canvas = Image.fromarray(out)
    draw = ImageDraw.Draw(canvas)
    ink = _ink_for(bg)
    for i, text in enumerate(labels):
        r, c = divmod(i, cols)
        x = c * (tile + gap) + tile / 2
        for size in range(label_size, MIN_LABEL_SIZE - 1, -1):  # a smaller font before a cut label
            f = font(size)
            if draw.textlength(text, font=f) <= tile:
                break
        draw.text((x, r * (cell_h + gap) + 1 + label_size - size), fit_text(draw, text, f, tile), font=f, fill=ink,
                  anchor="ma")
    return np.asarray(canvas)


def square_cols(n: int) -> int:
    """Columns of a near-square grid of ``n`` square tiles."""
    return max(1, math.ceil(math.sqrt(n)))


def titled(img: np.ndarray, title: str, size: int = TITLE_SIZE, bg: int = 255) -> np.ndarray:
    """The picture under a one-line title of ``size`` pixels (shortened in the middle if need be),
    widened to the title when the title is wider."""
    from PIL import Image, ImageDraw

    from cnncli.imaging.figure import fit_text, font

    f = font(size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = max(img.shape[1], min(int(probe.textlength(title, font=f)) + 8, max(img.shape[1], 1200)))
    height = size + 10
    canvas = Image.new("RGB", (width, img.shape[0] + height), (bg, bg, bg))
    canvas.paste(Image.fromarray(img), ((width - img.shape[1]) // 2, height))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 4), fit_text(draw, title, f, width - 8), font=f, fill=_ink_for(bg))
    return np.asarray(canvas)


def packed(pictures: Sequence[np.ndarray], gap: int = 16, bg: int = 255, aspect: float = 16 / 10) -> np.ndarray:
    """Pictures in rows, each cell as large as the largest picture (no square cells: a wide
    picture stays wide), with as many columns as bring the whole nearest to ``aspect``
    (width / height)."""
    if not pictures:
        return np.full((1, 1, 3), bg, dtype=np.uint8)
    h = max(p.shape[0] for p in pictures)
    w = max(p.shape[1] for p in pictures)
    n = len(pictures)

    def misfit(cols: int) -> float:
        rows = -(-n // cols)
        return abs(math.log((cols * w + (cols - 1) * gap) / (rows * h + (rows - 1) * gap) / aspect))

    cols = min(range(1, n + 1), key=misfit)
    rows = -(-n // cols)
    out = np.full((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, 3), bg, dtype=np.uint8)
    for i, p in enumerate(pictures):
        r, c = divmod(i, cols)
        if p.ndim == 2:
            p = np.repeat(p[:, :, None], 3, axis=2)
        out[r * (h + gap):r * (h + gap) + p.shape[0], c * (w + gap):c * (w + gap) + p.shape[1]] = p[:, :, :3]
    return out


def scale_note(img: np.ndarray, text: str, size: int = LABEL_SIZE, bg: int = 255) -> np.ndarray:
    """The picture with one line of text under it (a legend: what mid-grey, white and black are),
    the canvas widened (background on the right) where the line is wider than a small picture."""
    from PIL import Image, ImageDraw

    from cnncli.imaging.figure import fit_text, font

    f = font(size)
    height = _label_height(size) + 4
    width = max(img.shape[1], min(int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(text, font=f)) + 4, 640))
    canvas = Image.new("RGB", (width, img.shape[0] + height), (bg, bg, bg))
    canvas.paste(Image.fromarray(img), (0, 0))
    draw = ImageDraw.Draw(canvas)
    draw.text((2, img.shape[0] + 3), fit_text(draw, text, f, width - 4), font=f, fill=_ink_for(bg))
    return np.asarray(canvas)
