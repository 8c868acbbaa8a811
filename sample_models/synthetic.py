"""Deterministic synthetic images of ten kinds of visual structure, for zfnet_mini.onnx.

Only numpy and Pillow: the test suite (which has no torch) regenerates a held-out set with it.
Image ``i`` of a set depends only on ``(seed, i)``: its label is ``i % 10`` and its pixels come
from ``numpy.random.default_rng([seed, i])``, so any slice of a set can be made on its own.

Each image is an RGB uint8 array, SIZE×SIZE, with one object or texture patch of one class, in a
random colour, position, scale and rotation, over a cluttered background (a smooth two-colour
gradient, low-frequency colour noise, a few faint random polygons and thin line segments, and
pixel noise).

    from sample_models.synthetic import CLASSES, make_image, make_set
    x, y = make_set(200, seed=2024)        # x: (200, SIZE, SIZE, 3) uint8, y: (200,) int64
    make_image(7, seed=0)                  # one image: (array, label)
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = 112
CLASSES = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "stripes",
    "checkerboard",
    "dots",
    "rings",
    "zigzag",
)
SS = 2  # supersampling factor for anti-aliased shape edges

_YY, _XX = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + 0.5


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.0, 1.0, 3).astype(np.float32)


def _contrasting(rng: np.random.Generator, ref: np.ndarray, min_dist: float = 0.45) -> np.ndarray:
    """A colour at least ``min_dist`` (Euclidean, RGB in 0–1) from ``ref``."""
    for _ in range(100):
        c = _colour(rng)
        if np.linalg.norm(c - ref) >= min_dist:
            return c
    return (1.0 - ref).astype(np.float32)


def _background(rng: np.random.Generator) -> np.ndarray:
    a, b = _colour(rng), _colour(rng)
    theta = rng.uniform(0, 2 * math.pi)
    t = ((_XX - SIZE / 2) * math.cos(theta) + (_YY - SIZE / 2) * math.sin(theta)) / SIZE + 0.5
    t = np.clip(t, 0, 1)[..., None]
    img = a * (1 - t) + b * t
    # low-frequency colour noise
    g = rng.integers(3, 7)
    low = rng.normal(0, rng.uniform(0.03, 0.12), (g, g, 3)).astype(np.float32)
    low_img = Image.fromarray(((low + 0.5).clip(0, 1) * 255).astype(np.uint8)).resize(
        (SIZE, SIZE), Image.BICUBIC
    )
    img = img + (np.asarray(low_img, np.float32) / 255 - 0.5)
    # clutter: faint random polygons and thin line segments
    canvas = Image.fromarray((img.clip(0, 1) * 255).astype(np.uint8))
    layer = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for _ in range(rng.integers(2, 7)):
        cx, cy = rng.uniform(0, SIZE, 2)
        n = int(rng.integers(4, 9))
        r = rng.uniform(6, 22) * rng.uniform(0.4, 1.0, n)
        ang = np.sort(rng.uniform(0, 2 * math.pi, n))
        pts = [(float(cx + ri * math.cos(t_)), float(cy + ri * math.sin(t_))) for ri, t_ in zip(r, ang)]
        col = tuple(int(v) for v in rng.integers(0, 256, 3)) + (int(rng.integers(50, 140)),)
        draw.polygon(pts, fill=col)
    for _ in range(rng.integers(1, 6)):
        x0, y0 = rng.uniform(0, SIZE, 2)
        ln = rng.uniform(8, 30)
        t_ = rng.uniform(0, 2 * math.pi)
        col = tuple(int(v) for v in rng.integers(0, 256, 3)) + (int(rng.integers(50, 140)),)
        end = (x0 + ln * math.cos(t_), y0 + ln * math.sin(t_))
        draw.line([(x0, y0), end], fill=col, width=int(rng.integers(1, 3)))
    canvas = Image.alpha_composite(canvas.convert("RGBA"), layer).convert("RGB")
    return np.asarray(canvas, np.float32) / 255


def _mask(draw_fn) -> np.ndarray:
    """Anti-aliased 0–1 mask: ``draw_fn(draw, s)`` draws at SS× scale, coordinates times ``s``."""
    big = Image.new("L", (SIZE * SS, SIZE * SS), 0)
    draw_fn(ImageDraw.Draw(big), SS)
    small = big.resize((SIZE, SIZE), Image.BOX)
    return np.asarray(small, np.float32) / 255


def _rot(pts: np.ndarray, theta: float) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    return pts @ np.array([[c, s], [-s, c]], np.float32)


def _polygon_mask(pts: np.ndarray) -> np.ndarray:
    return _mask(lambda d, s: d.polygon([(float(x * s), float(y * s)) for x, y in pts], fill=255))


def _placement(rng: np.random.Generator, lo: float, hi: float):
    """Radius in [lo, hi]×SIZE/2 and a centre that keeps the shape mostly inside the image."""
    r = rng.uniform(lo, hi) * SIZE / 2
    m = r * 0.85
    cx = rng.uniform(m, SIZE - m)
    cy = rng.uniform(m, SIZE - m)
    return r, cx, cy, rng.uniform(0, 2 * math.pi)


def _shape_alpha(label: int, rng: np.random.Generator) -> np.ndarray:
    name = CLASSES[label]
    if name == "circle":
        r, cx, cy, _ = _placement(rng, 0.3, 0.7)
        return _mask(lambda d, s: d.ellipse([(cx - r) * s, (cy - r) * s, (cx + r) * s, (cy + r) * s], fill=255))
    if name == "square":
        r, cx, cy, th = _placement(rng, 0.35, 0.75)
        h = r / math.sqrt(2)
        pts = np.array([[-h, -h], [h, -h], [h, h], [-h, h]], np.float32)
        return _polygon_mask(_rot(pts, th) + [cx, cy])
    if name == "triangle":
        r, cx, cy, th = _placement(rng, 0.35, 0.8)
        a = np.array([0, 2 * math.pi / 3, 4 * math.pi / 3]) + th
        pts = np.stack([r * np.cos(a), r * np.sin(a)], 1) + [cx, cy]
        return _polygon_mask(pts)
    if name == "star":
        r, cx, cy, th = _placement(rng, 0.35, 0.8)
        inner = rng.uniform(0.38, 0.5)
        a = np.arange(10) * math.pi / 5 + th
        rad = np.where(np.arange(10) % 2 == 0, r, r * inner)
        pts = np.stack([rad * np.cos(a), rad * np.sin(a)], 1) + [cx, cy]
        return _polygon_mask(pts)
    if name == "cross":
        r, cx, cy, th = _placement(rng, 0.35, 0.8)
        w = r * rng.uniform(0.22, 0.36)
        pts = np.array(
            [[-w, -r], [w, -r], [w, -w], [r, -w], [r, w], [w, w],
             [w, r], [-w, r], [-w, w], [-r, w], [-r, -w], [-w, -w]],
            np.float32,
        )
        return _polygon_mask(_rot(pts, th) + [cx, cy])
    if name == "zigzag":
        r, cx, cy, th = _placement(rng, 0.45, 0.85)
        n = int(rng.integers(4, 8))
        amp = r * rng.uniform(0.2, 0.45)
        xs = np.linspace(-r, r, n + 1)
        ys = np.where(np.arange(n + 1) % 2 == 0, -amp, amp)
        pts = _rot(np.stack([xs, ys], 1).astype(np.float32), th) + [cx, cy]
        width = rng.uniform(3, 7)

        def draw(d, s):
            p = [(float(x * s), float(y * s)) for x, y in pts]
            d.line(p, fill=255, width=int(round(width * s)), joint="curve")

        return _mask(draw)
    return _texture_alpha(name, rng)


def _region(rng: np.random.Generator) -> np.ndarray:
    """Soft mask of a rotated rectangle or ellipse holding a texture, 45–100 % of the image."""
    w = rng.uniform(0.45, 1.0) * SIZE / 2
    h = rng.uniform(0.45, 1.0) * SIZE / 2
    cx = rng.uniform(min(w, SIZE / 2) * 0.8, SIZE - min(w, SIZE / 2) * 0.8)
    cy = rng.uniform(min(h, SIZE / 2) * 0.8, SIZE - min(h, SIZE / 2) * 0.8)
    th = rng.uniform(0, math.pi)
    u = (_XX - cx) * math.cos(th) + (_YY - cy) * math.sin(th)
    v = -(_XX - cx) * math.sin(th) + (_YY - cy) * math.cos(th)
    if rng.random() < 0.5:
        d = np.maximum(np.abs(u) - w, np.abs(v) - h)
    else:
        d = (np.sqrt((u / w) ** 2 + (v / h) ** 2) - 1) * min(w, h)
    return np.clip(0.5 - d, 0, 1)


def _texture_alpha(name: str, rng: np.random.Generator) -> np.ndarray:
    region = _region(rng)
    th = rng.uniform(0, math.pi)
    u = _XX * math.cos(th) + _YY * math.sin(th)
    v = -_XX * math.sin(th) + _YY * math.cos(th)
    if name == "stripes":
        period = rng.uniform(7, 16)
        duty = rng.uniform(0.35, 0.6)
        f = np.mod(u / period, 1.0)
        tex = np.clip((np.minimum(f, 1 - f) - (1 - duty) / 2) * period + 0.5, 0, 1)
    elif name == "checkerboard":
        period = rng.uniform(12, 26)
        su = np.sin(2 * math.pi * u / period)
        sv = np.sin(2 * math.pi * v / period)
        tex = np.clip(su * sv * 6 + 0.5, 0, 1)
    elif name == "dots":
        period = rng.uniform(10, 20)
        rad = period * rng.uniform(0.2, 0.33)
        jitter = rng.uniform(0, period, 2)
        du = np.mod(u + jitter[0], period) - period / 2
        dv = np.mod(v + jitter[1], period) - period / 2
        tex = np.clip(rad - np.sqrt(du**2 + dv**2) + 0.5, 0, 1)
    elif name == "rings":
        period = rng.uniform(8, 16)
        cx, cy = rng.uniform(0.25, 0.75, 2) * SIZE
        rr = np.sqrt((_XX - cx) ** 2 + (_YY - cy) ** 2)
        f = np.mod(rr / period, 1.0)
        duty = rng.uniform(0.35, 0.6)
        tex = np.clip((np.minimum(f, 1 - f) - (1 - duty) / 2) * period + 0.5, 0, 1)
        # rings are a disc of concentric circles, not a full-frame texture
        outer = rng.uniform(2.5, 5.0) * period
        tex = tex * np.clip(outer - rr + 0.5, 0, 1)
        return tex.astype(np.float32)
    else:  # pragma: no cover - guarded by CLASSES
        raise ValueError(name)
    return (tex * region).astype(np.float32)


def make_image(index: int, seed: int) -> tuple[np.ndarray, int]:
    """Image ``index`` of the set with ``seed``: (uint8 array SIZE×SIZE×3, label)."""
    label = index % len(CLASSES)
    rng = np.random.default_rng([seed, index])
    bg = _background(rng)
    alpha = _shape_alpha(label, rng)[..., None]
    inside = (bg * alpha).sum((0, 1)) / max(float(alpha.sum()), 1.0)
    fg = _contrasting(rng, inside)
    if rng.random() < 0.3:  # some objects shaded rather than flat
        fg2 = np.clip(fg + rng.normal(0, 0.15, 3), 0, 1).astype(np.float32)
        t = np.clip(_YY / SIZE, 0, 1)[..., None]
        fgimg = fg * (1 - t) + fg2 * t
    else:
        fgimg = fg
    img = bg * (1 - alpha) + fgimg * alpha
    img = img + rng.normal(0, rng.uniform(0.0, 0.05), img.shape).astype(np.float32)
    out = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    if rng.random() < 0.2:
        out = np.asarray(Image.fromarray(out).filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0))))
    return out, label


def make_set(n: int, seed: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images ``start`` … ``start+n-1`` of the set with ``seed``: (n×SIZE×SIZE×3 uint8, n int64)."""
    x = np.empty((n, SIZE, SIZE, 3), np.uint8)
    y = np.empty(n, np.int64)
    for k in range(n):
        x[k], y[k] = make_image(start + k, seed)
    return x, y


MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def preprocess(x: np.ndarray) -> np.ndarray:
    """uint8 N×H×W×3 → float32 N×3×H×W, RGB in 0–1 normalised with the ImageNet mean/std."""
    f = x.astype(np.float32) / 255.0
    f = (f - MEAN) / STD
    return np.ascontiguousarray(f.transpose(0, 3, 1, 2))
