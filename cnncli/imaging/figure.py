"""The input | projection | overlay figure of `cnn project`, composed with Pillow.

One figure per channel, so it has to be cheap: no matplotlib figure, only array arithmetic on
uint8/float32 and a few Pillow pastes. Small inputs are enlarged by a whole factor with
nearest-neighbour sampling (pixels stay crisp), large ones reduced to at most ``PANEL_MAX``.
"""

from __future__ import annotations

import threading
from functools import lru_cache

import numpy as np

PANEL_MIN = 224  # panels are enlarged (whole factors) until their longer side reaches this
PANEL_MAX = 512  # and reduced when larger
GAP = 10
MARGIN = 8
TITLE_SIZE = 14
LABEL_SIZE = 13
TITLE_H, LABEL_H = TITLE_SIZE + 10, LABEL_SIZE + 6
BACKGROUND = (255, 255, 255)
INK = (30, 30, 30)
# zlib level 1: 4-10x faster to write than Pillow's default 6, files ~10% larger (one PNG per
# channel is most of `--channel all`'s time outside onnxruntime)
PNG_LEVEL = 1


def overlay(pixels: np.ndarray, proj: np.ndarray) -> np.ndarray:
    """The input in grey with the projection's magnitude as a warm heat layer: uint8 [H, W, 3].

    pixels: uint8 [H, W, 3]; proj: the projection [C, H, W] (any float dtype)."""
    grey = pixels.mean(axis=2, dtype=np.float32)[:, :, None] * np.float32(0.6 / 255.0)
    mag = np.abs(np.nan_to_num(proj.astype(np.float32, copy=False), nan=0.0, posinf=0.0, neginf=0.0)).sum(axis=0)
    peak = float(mag.max()) if mag.size else 0.0
    heat = mag / np.float32(peak) if peak > 0 else mag
    a = (np.clip(heat * np.float32(1.5), 0, 1) * np.float32(0.8))[:, :, None]
    red = np.stack([np.ones_like(heat), heat * np.float32(0.6), np.zeros_like(heat)], axis=2)
    out = grey * (1 - a) + red * a
    return np.round(out * 255).astype(np.uint8)


_local = threading.local()  # fonts per thread: a FreeType face must not be shared between threads


def font(size: int):
    from PIL import ImageFont

    fonts = _local.__dict__.setdefault("fonts", {})
    if size not in fonts:
        try:
            fonts[size] = ImageFont.load_default(size=size)
        except TypeError:  # Pillow < 10.1: the bitmap font, one size
            fonts[size] = ImageFont.load_default()
    return fonts[size]


def fit_text(draw, text: str, font, width: int) -> str:
    """``text``, shortened in the middle with '…' until it fits ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    lo, hi = 0, len(text)
    while lo < hi:  # the longest kept length that fits
        mid = (lo + hi + 1) // 2
        cut = text[: (mid + 1) // 2] + "…" + text[len(text) - mid // 2:]
        if draw.textlength(cut, font=font) <= width:
            lo = mid
        else:
            hi = mid - 1
    return text[: (lo + 1) // 2] + "…" + text[len(text) - lo // 2:] if lo else "…"


def _panel(img: np.ndarray):
    """uint8 [H, W] or [H, W, 3] → a Pillow RGB image scaled for the figure."""
    from PIL import Image

    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    im = Image.fromarray(np.ascontiguousarray(img))
    longer = max(im.size)
    if longer < PANEL_MIN:
        f = -(-PANEL_MIN // longer)
        im = im.resize((im.width * f, im.height * f), Image.Resampling.NEAREST)
    elif longer > PANEL_MAX:
        s = PANEL_MAX / longer
        im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.Resampling.BILINEAR)
    return im


@lru_cache(maxsize=8)
def _template(pw: int, ph: int):  # read-only once made: each figure draws on a copy
    """The figure's background with the three panel labels drawn (the same for every channel)."""
    from PIL import Image, ImageDraw

    width, height = 2 * MARGIN + 3 * pw + 2 * GAP, MARGIN + TITLE_H + LABEL_H + ph + MARGIN
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for i, label in enumerate(("input", "projection", "overlay")):
        draw.text((MARGIN + i * (pw + GAP) + pw / 2, MARGIN + TITLE_H), label, font=font(LABEL_SIZE), fill=INK, anchor="ma")
    return canvas


BOX = (0, 190, 255)  # the receptive field's box: a cyan that neither grey nor the warm overlay has


def draw_box(im, box, size: tuple[int, int]):
    """A panel (Pillow image showing an input of ``size`` = (H, W) pixels) with the rectangle
    ``box`` = [y0, x0, y1, x1) of input pixels drawn on it, 2 pixels wide, outside dark."""
    from PIL import ImageDraw

    y0, x0, y1, x1 = box
    sy, sx = im.height / size[0], im.width / size[1]
    draw = ImageDraw.Draw(im)
    rect = [round(x0 * sx), round(y0 * sy), max(round(x0 * sx), round(x1 * sx) - 1), max(round(y0 * sy), round(y1 * sy) - 1)]
    draw.rectangle([rect[0] - 1, rect[1] - 1, rect[2] + 1, rect[3] + 1], outline=(0, 0, 0), width=1)
    draw.rectangle(rect, outline=BOX, width=2)
    return im


def projection_figure(pixels: np.ndarray, proj_img: np.ndarray, proj: np.ndarray, title: str, box=None):
    """Input | projection | overlay side by side under a title: a Pillow RGB image.

    pixels: the input as shown, uint8 [H, W, 3]; proj_img: the projection as shown (uint8
    [H, W] or [H, W, 3], already normalised); proj: the raw projection [C, H, W] for the overlay.
    The title (a model path, a tensor name) is drawn on one line, its control and bidi characters
    as escapes (``cnncli.escaping.visible``: a newline as ``\\n``). ``box``: [y0, x0, y1, x1) in
    input pixels (the receptive field of the unit projected), drawn on the input and the
    projection."""
    from PIL import ImageDraw

    from cnncli.escaping import visible

    panels = [_panel(pixels), _panel(proj_img), _panel(overlay(pixels, proj))]
    if box is not None:
        for im in panels[:2]:
            draw_box(im, box, pixels.shape[:2])
    pw = max(p.width for p in panels)
    ph = max(p.height for p in panels)
    canvas = _template(pw, ph).copy()
    draw = ImageDraw.Draw(canvas)
    tfont = font(TITLE_SIZE)
    draw.text((canvas.width / 2, MARGIN), fit_text(draw, visible(title), tfont, canvas.width - 2 * MARGIN), font=tfont,
              fill=INK, anchor="ma")
    top = MARGIN + TITLE_H + LABEL_H
    for i, im in enumerate(panels):
        x = MARGIN + i * (pw + GAP)
        canvas.paste(im, (x + (pw - im.width) // 2, top + (ph - im.height) // 2))
    return canvas


def save_image(im, path) -> "Path":
    """Write a Pillow image (or a uint8 array) as PNG, atomically, at the figure's fast zlib level."""
    from cnncli.imaging.pictures import save_png

    return save_png(im, path, PNG_LEVEL)
