"""Pictures of projections: normalisation, PNG and .npy files, tiles, grids (figures: cnncli/imaging/figure.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnncli.atomic import atomic_path


def to_display(proj: np.ndarray, norm: str = "grey", bgr: bool = False, percentile: float = 99.5) -> np.ndarray:
    """A projection [C, H, W] as uint8 [H, W, 3] (or [H, W] for one or two channels).

    grey: 0 at mid-grey, scaled symmetrically by the largest magnitude (the paper's figures);
    percentile: the same but scaled by the given percentile of |x|, clipping the rest;
    minmax: the smallest value black, the largest white.
    """
    # float32 (half the time of float64 on a 224x224 picture, made once per channel); a float64
    # projection keeps its precision for the scale
    dtype = np.float64 if np.asarray(proj).dtype == np.float64 else np.float32
    x = np.array(proj, dtype=dtype)
    if x.shape[0] == 2:  # no 2-channel picture (Pillow and matplotlib refuse [H, W, 2]): show their sum in grey
        x = x.sum(axis=0, keepdims=True)
    if x.shape[0] == 3 and bgr:
        x = x[::-1]
    x[~np.isfinite(x)] = 0
    if norm == "minmax":  # y: the grey level, 0 to 255
        lo, hi = x.min(), x.max()
        y = (x - lo) * dtype(255 / (hi - lo)) if hi > lo else np.full_like(x, 127.5)
    else:
        mag = np.abs(x)
        scale = float(np.percentile(mag, percentile) if norm == "percentile" else mag.max())
        if scale > 0:
            y = np.clip(x, -scale, scale, out=mag)
            y *= dtype(127.5 / scale)
            y += dtype(127.5)
        else:
            y = np.full_like(x, 127.5)
    img = np.round(y).astype(np.uint8)
    img = img.transpose(1, 2, 0)
    if img.shape[2] == 1:
        return img[:, :, 0]
    return img[:, :, :3]


def input_display(x: np.ndarray) -> np.ndarray:
    """A model input [1, C, H, W] with no known preprocessing, shown min–max as uint8 [H, W, 3]."""
    img = to_display(x[0], "minmax")
    return np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img


def save_png(img, path: Path | str, compress_level: int = 6) -> Path:
    """Write a uint8 array (or a Pillow image) as PNG, atomically (a complete file or none);
    ``compress_level``: zlib's, Pillow's default 6."""
    from PIL import Image

    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    with atomic_path(path, suffix=".png") as tmp:
        img.save(tmp, format="PNG", compress_level=compress_level)
    return Path(path)


def save_npy(arr: np.ndarray, path: Path | str) -> Path:
    with atomic_path(path, suffix=".npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(arr, dtype=np.float32))
    return Path(path)


def resize_tile(img: np.ndarray, size: int) -> np.ndarray:
    """Scale an image (uint8 [H, W] or [H, W, 3]) so its longer side is ``size``, nearest-neighbour
    when enlarging (receptive-field patches are small), as [h, w, 3]."""
    from PIL import Image

    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    h, w = img.shape[:2]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(img).resize((nw, nh), resample))


def grid(tiles: list[np.ndarray], cols: int, tile: int, gap: int = 2, bg: int = 255) -> np.ndarray:
    """Tiles (any sizes) centred in cells of ``tile`` pixels, ``cols`` to a row."""
    rows = max(1, -(-len(tiles) // cols))
    out = np.full((rows * tile + (rows - 1) * gap, cols * tile + (cols - 1) * gap, 3), bg, dtype=np.uint8)
    for i, t in enumerate(tiles):
        t = resize_tile(t, tile)
        r, c = divmod(i, cols)
        y = r * (tile + gap) + (tile - t.shape[0]) // 2
        x = c * (tile + gap) + (tile - t.shape[1]) // 2
        out[y:y + t.shape[0], x:x + t.shape[1]] = t
    return out


def side_by_side(left: np.ndarray, right: np.ndarray, gap: int = 8, bg: int = 255) -> np.ndarray:
    h = max(left.shape[0], right.shape[0])
    out = np.full((h, left.shape[1] + gap + right.shape[1], 3), bg, dtype=np.uint8)
    out[: left.shape[0], : left.shape[1]] = left
    out[: right.shape[0], left.shape[1] + gap:] = right
    return out
