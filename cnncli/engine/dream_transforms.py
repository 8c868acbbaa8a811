"""The transform robustness of `cnn dream`: Lucent's ``transform.standard_transforms`` in numpy,
each op with its exact transpose, so the gradient at the model input goes back to the image.

Lucent (0.1.8, on kornia 0.4.1) draws, once per step and for the whole batch, in this order::

    pad(12, mode="constant", constant_value=0.5)
    jitter(8)                       # translate by (dx, dy), each drawn from 0..7
    random_scale([1 + (i - 5) / 50 for i in range(11)])   # bilinear, align_corners=True, then zero pad
    random_rotate(list(range(-10, 11)) + 5 * [0])          # degrees, about the centre
    jitter(4)

then normalises for the model and resizes to its input (bilinear, align_corners=True). kornia's
translate and rotate are ``warp_affine`` with ``align_corners=False``: the pixel matrix is
normalised with (size - 1) but sampled with ``grid_sample(align_corners=False)``, so a jitter of d
pixels moves the image by d·size/(size - 1), bilinearly; :class:`Warp` samples exactly there.
The draws come from a ``numpy.random.RandomState`` in Lucent's order, so Lucent run after
``np.random.seed(seed)`` draws the same transforms.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from cnncli.reverse.resize import resize_matrix

PAD = 12
PAD_VALUE = 0.5
JITTER = (8, 4)
SCALES = [1 + (i - 5) / 50.0 for i in range(11)]
ANGLES = list(range(-10, 11)) + 5 * [0]


@dataclass(frozen=True)
class Draw:
    """One step's random choices."""

    jitter1: tuple[int, int]
    scale: float
    angle: float  # degrees
    jitter2: tuple[int, int]


def draw(rng: np.random.RandomState) -> Draw:
    """One step's transforms, drawn in the order Lucent draws them (np.random.choice each)."""
    j1 = (int(rng.choice(JITTER[0])), int(rng.choice(JITTER[0])))
    scale = float(rng.choice(SCALES))
    angle = float(rng.choice(ANGLES))
    j2 = (int(rng.choice(JITTER[1])), int(rng.choice(JITTER[1])))
    return Draw(j1, scale, angle, j2)


IDENTITY = Draw((0, 0), 1.0, 0.0, (0, 0))


def separable(x: np.ndarray, mh: np.ndarray, mw: np.ndarray) -> np.ndarray:
    """``mh @ x @ mw.T`` on each plane of x [..., H, W] (both products as BLAS right-multiplications)."""
    t = x @ mw.T.astype(x.dtype, copy=False)
    t = np.ascontiguousarray(np.swapaxes(t, -1, -2)) @ mh.T.astype(x.dtype, copy=False)
    return np.ascontiguousarray(np.swapaxes(t, -1, -2))


@functools.lru_cache(maxsize=512)
def resize_axis(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in]: a bilinear resize along one axis with align_corners=True (torch.nn.Upsample)."""
    return _frozen(resize_matrix(n_in, n_out, "linear", "align_corners", "floor").astype(np.float64))


@functools.lru_cache(maxsize=512)
def shift_axis(n: int, d: float) -> np.ndarray:
    """[n, n]: kornia's translate by ``d`` pixels along one axis (align_corners=False, zeros
    outside): output j samples the input at j - d·n/(n - 1), linearly."""
    xn = (2 * np.arange(n) + 1) / n - 1 - 2.0 * d / (n - 1)
    src = ((xn + 1) * n - 1) / 2
    m = np.zeros((n, n))
    x0 = np.floor(src)
    for k, wk in ((x0, 1 - (src - x0)), (x0 + 1, src - x0)):
        inside = (k >= 0) & (k < n)
        m[np.arange(n)[inside], k[inside].astype(int)] += wk[inside]
    return _frozen(m)


@functools.lru_cache(maxsize=512)
def first_axis(n: int, scale: float, d: float, before: int, after: int) -> np.ndarray:
    """One axis of the pad's image (size n + 2·PAD) to the random scale's output: the first jitter
    by ``d``, the resize to ceil(scale·size), zero padding ``before`` and ``after``."""
    n1 = n + 2 * PAD
    m = resize_axis(n1, int(np.ceil(scale * n1))) @ shift_axis(n1, d)
    return _frozen(np.pad(m, ((before, after), (0, 0))))


@functools.lru_cache(maxsize=512)
def last_axis(n: int, out: int, d: float) -> np.ndarray:
    """One axis of the rotation's output to the model input: the second jitter, the final resize."""
    return _frozen(resize_axis(n, out) @ shift_axis(n, d))


def _frozen(m: np.ndarray) -> np.ndarray:
    """A cached matrix, read-only so no caller can change what the next one gets."""
    m.setflags(write=False)
    return m


class Separable:
    """x -> mh @ x @ mw.T + const on every plane (pads, translations, resizes, composed per axis)."""

    def __init__(self, mh: np.ndarray, mw: np.ndarray, const: np.ndarray | None = None):
        self.mh, self.mw = mh.astype(np.float32), mw.astype(np.float32)
        self.const = None if const is None else const.astype(np.float32)

    def forward(self, x: np.ndarray) -> np.ndarray:
        y = separable(x, self.mh, self.mw)
        return y if self.const is None else y + self.const.astype(x.dtype, copy=False)

    def transpose(self, g: np.ndarray) -> np.ndarray:
        return separable(g, self.mh.T, self.mw.T)


def _normaliser(h: int, w: int) -> np.ndarray:
    """kornia's normal_transform_pixel: pixels to [-1, 1] with (size - 1)."""
    return np.array([[2.0 / (w - 1), 0.0, -1.0], [0.0, 2.0 / (h - 1), -1.0], [0.0, 0.0, 1.0]])


class Warp:
    """kornia 0.4.1's ``warp_affine(x, M, (h, w))`` (bilinear, zeros outside, align_corners=False)
    for a 2×3 pixel matrix ``M`` (destination from source): four taps per output pixel, gathered
    forward and scattered back (``np.bincount``) in the transpose."""

    def __init__(self, h: int, w: int, matrix: np.ndarray):
        norm = _normaliser(h, w)
        m3 = np.vstack([matrix, [0.0, 0.0, 1.0]])
        a = np.linalg.inv(norm @ m3 @ np.linalg.inv(norm))  # normalised destination -> source
        xs = (2 * np.arange(w) + 1) / w - 1  # affine_grid's base grid (align_corners=False)
        ys = (2 * np.arange(h) + 1) / h - 1
        gx = a[0, 0] * xs[None, :] + a[0, 1] * ys[:, None] + a[0, 2]
        gy = a[1, 0] * xs[None, :] + a[1, 1] * ys[:, None] + a[1, 2]
        ix = ((gx + 1) * w - 1) / 2  # grid_sample's unnormalisation (align_corners=False)
        iy = ((gy + 1) * h - 1) / 2
        x0, y0 = np.floor(ix), np.floor(iy)
        fx, fy = ix - x0, iy - y0
        index, weight = [], []
        for dy, wy in ((0, 1 - fy), (1, fy)):
            for dx, wx in ((0, 1 - fx), (1, fx)):
                xx, yy = x0 + dx, y0 + dy
                inside = (xx >= 0) & (xx < w) & (yy >= 0) & (yy < h)
                index.append(np.where(inside, yy * w + xx, 0).astype(np.int64).ravel())
                weight.append(np.where(inside, wx * wy, 0.0).ravel())
        self.h, self.w = h, w
        self.index = np.stack(index)  # [4, h*w]
        self.weight = np.stack(weight).astype(np.float32)

    def forward(self, x: np.ndarray) -> np.ndarray:
        flat = x.reshape(-1, self.h * self.w)
        wt = self.weight.astype(x.dtype, copy=False)
        y = sum(flat[:, self.index[k]] * wt[k] for k in range(4))
        return y.reshape(x.shape)

    def transpose(self, g: np.ndarray) -> np.ndarray:
        n = self.h * self.w
        flat = g.reshape(-1, n)
        planes = flat.shape[0]
        idx = (self.index[None, :, :] + (np.arange(planes) * n)[:, None, None]).ravel()
        vals = (flat[:, None, :] * self.weight.astype(g.dtype)[None]).ravel()
        return np.bincount(idx, weights=vals, minlength=planes * n).astype(g.dtype).reshape(g.shape)


def rotation(h: int, w: int, degrees: float) -> Warp:
    """Lucent's random_rotate: kornia.get_rotation_matrix2d about ((w-1)/2, (h-1)/2), unit scale."""
    rad = math.radians(degrees)
    a, b = math.cos(rad), math.sin(rad)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    return Warp(h, w, np.array([[a, b, (1 - a) * cx - b * cy], [-b, a, b * cx + (1 - a) * cy]]))


class Chain:
    """The transforms of one step from an image of ``size`` to the model input's ``out``, as
    three ops: the pad, first jitter and random scale composed per axis (:class:`Separable`, the
    pad's 0.5 border carried as a constant image), the rotation (:class:`Warp`; none at 0°), the
    second jitter and the final resize composed per axis. ``standard=False``: the resize alone."""

    def __init__(self, size: tuple[int, int], d: Draw, out: tuple[int, int], standard: bool = True):
        h, w = size
        if not standard:
            self.ops = [Separable(resize_axis(h, out[0]), resize_axis(w, out[1]))]
            return
        h1, w1 = h + 2 * PAD, w + 2 * PAD
        sh, sw = int(np.ceil(d.scale * h1)), int(np.ceil(d.scale * w1))
        pad_x, pad_y = max(0, int(np.ceil((w1 - sw) / 2))), max(0, int(np.ceil((h1 - sh) / 2)))
        # F.pad(x, [pad_y, pad_x] * 2): width pad_y left, pad_x right; height pad_y top, pad_x bottom
        ah = first_axis(h, d.scale, d.jitter1[1], pad_y, pad_x)
        aw = first_axis(w, d.scale, d.jitter1[0], pad_y, pad_x)
        inner_h, inner_w = ah[:, PAD:PAD + h], aw[:, PAD:PAD + w]
        # the pad's grey border (all grey, less the inside) through the same matrices: rank two
        border = PAD_VALUE * (np.outer(ah.sum(axis=1), aw.sum(axis=1)) - np.outer(inner_h.sum(axis=1), inner_w.sum(axis=1)))
        h2, w2 = ah.shape[0], aw.shape[0]
        self.ops = [Separable(inner_h, inner_w, border)]
        if d.angle != 0:  # (kornia's warp at 0° samples every pixel at itself)
            self.ops.append(rotation(h2, w2, d.angle))
        self.ops.append(Separable(last_axis(h2, out[0], d.jitter2[1]), last_axis(w2, out[1], d.jitter2[0])))

    def forward(self, x: np.ndarray) -> np.ndarray:
        for op in self.ops:
            x = op.forward(x)
        return x

    def transpose(self, g: np.ndarray) -> np.ndarray:
        for op in reversed(self.ops):
            g = op.transpose(g)
        return g
