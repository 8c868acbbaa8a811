"""Turning an image file (or a .npy array) into the model's input tensor."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from cnncli.choices import PRESETS
from cnncli.errors import BadArgument, CnnError


@dataclass(frozen=True)
class Preprocess:
    """x = (pixel·scale − mean) / std per channel, channels in RGB or BGR order."""

    name: str
    scale: float  # 1/255 for 0–1 presets, 1 for 0–255
    mean: tuple[float, ...]
    std: tuple[float, ...]
    bgr: bool = False

    def describe(self) -> dict:
        return {"preset": self.name, "range": "0-1" if self.scale != 1 else "0-255",
                "mean": list(self.mean), "std": list(self.std), "channel_order": "BGR" if self.bgr else "RGB"}


def preset(name: str, channels: int) -> Preprocess:
    if name == "imagenet":
        if channels != 3:
            return Preprocess("imagenet", 1 / 255, (0.449,) * channels, (0.226,) * channels)
        return Preprocess("imagenet", 1 / 255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    if name == "caffe":
        mean = (103.939, 116.779, 123.68) if channels == 3 else (116.779,) * channels
        return Preprocess("caffe", 1.0, mean, (1.0,) * channels, bgr=channels == 3)
    if name == "unit":
        return Preprocess("unit", 1 / 255, (0.0,) * channels, (1.0,) * channels)
    if name == "raw":
        return Preprocess("raw", 1.0, (0.0,) * channels, (1.0,) * channels)
    raise BadArgument("--preset", f"unknown preset '{name}' (choose from {', '.join(PRESETS)})")


def make_preprocess(channels: int, name: str | None, mean=None, std=None, bgr: bool | None = None) -> Preprocess:
    """The default is 'imagenet' for 3 channels and 'unit' otherwise; overrides replace fields."""
    p = preset(name or ("imagenet" if channels == 3 else "unit"), channels)
    for label, values in (("--mean", mean), ("--std", std)):
        if values is not None and len(values) not in (1, channels):
            raise BadArgument(label, f"give 1 or {channels} values, not {len(values)}")
        if values is not None and not all(math.isfinite(v) for v in values):
            raise BadArgument(label, f"values must be finite numbers, not {', '.join(str(v) for v in values)}")
    if mean is not None:
        p = replace(p, mean=tuple(mean) * (channels if len(mean) == 1 else 1), name=p.name + "+custom")
    if std is not None:
        if any(s == 0 for s in std):
            raise BadArgument("--std", "values must be non-zero")
        p = replace(p, std=tuple(std) * (channels if len(std) == 1 else 1), name=p.name.split("+")[0] + "+custom")
    if bgr is not None:
        p = replace(p, bgr=bgr)
    return p


_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


class ImageReadError(CnnError):
    """An image file that cannot be read; ``reason`` says why in a few words."""

    def __init__(self, path, reason: str):
        super().__init__(f"cannot read image '{path}': {reason}")
        self.path, self.reason = str(path), reason


def read_image(path: Path | str, channels: int, size: tuple[int, int]) -> np.ndarray:
    """Decode (any mode: grey, RGB, RGBA, palette…), convert to the model's channel count and
    resize: uint8 array [H, W, C] in RGB order. An animated image (GIF, APNG, WebP) or a
    multi-page TIFF gives its first frame. Only a regular file is opened (a FIFO or a device
    is refused at once: see :func:`cnncli.imaging.sources.open_regular`)."""
    from PIL import Image, UnidentifiedImageError

    from cnncli.imaging.sources import NotRegularFile, open_regular

    if channels not in _MODES:
        raise CnnError(f"the model input has {channels} channels; images give 1, 3 or 4: pass a .npy array")
    path = Path(path)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            with open_regular(path) as f, Image.open(f) as im:
                im.seek(0)  # the first frame, whatever the format's default
                im.load()
                pixels = image_pixels(im, channels, size)
        for w in caught:  # Pillow's own line does not say which file; name it
            warnings.warn(f"'{path}': {w.message}", w.category, stacklevel=2)
        return pixels
    except FileNotFoundError:
        raise ImageReadError(path, "no such file") from None
    except IsADirectoryError:
        raise ImageReadError(path, "it is a directory") from None
    except NotRegularFile:
        raise ImageReadError(path, "not a regular file") from None
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "not an image"
        if isinstance(exc, UnidentifiedImageError):
            reason = "not an image Pillow can read"
        elif isinstance(exc, PermissionError):
            reason = "permission denied"
        raise ImageReadError(path, reason) from None


def image_pixels(im, channels: int, size: tuple[int, int]) -> np.ndarray:
    """A decoded Pillow image → uint8 [H, W, C] in RGB order, converted to the model's channel
    count and resized (shared by image files and the Python API's PIL images)."""
    from PIL import Image

    if channels not in _MODES:
        raise CnnError(f"the model input has {channels} channels; images give 1, 3 or 4: pass an array")
    im = _upright(im)
    im = _eight_bit(im)
    im = im.convert(_MODES[channels])
    im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    arr = np.asarray(im, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


def _upright(im):
    """The image turned as its EXIF orientation says (a phone photo taken upright comes out
    upright); an image without EXIF, or with EXIF Pillow cannot read, as it is."""
    from PIL import ImageOps

    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # a broken EXIF block must not make the picture unreadable
        return im


def _eight_bit(im):
    """Modes ``convert`` would clip or mangle, as 8-bit images with their range kept: 16-bit
    grey ('I;16…', and 'I' holding 16-bit values) scaled by 255/65535; 32-bit 'I' by its
    maximum; float 'F' taken as 0–1 when it lies there (else 0–255, clipped); a palette with
    transparency through RGBA (as Pillow asks)."""
    from PIL import Image

    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(im).astype(np.float64)
        a = np.where(np.isfinite(a), a, 0.0)
        top = float(a.max()) if a.size else 0.0
        if mode == "F":
            scale = 255.0 if a.size and a.min() >= 0 and top <= 1 else 1.0
        elif mode.startswith("I;16") or top <= 65535:
            scale = 255.0 / 65535.0 if (mode.startswith("I;16") or top > 255) else 1.0
        else:
            scale = 255.0 / top
        return Image.fromarray(np.clip(np.round(a * scale), 0, 255).astype(np.uint8), "L")
    if mode == "P" and "transparency" in im.info:
        return im.convert("RGBA")
    return im


def to_tensor(pixels: np.ndarray, p: Preprocess) -> np.ndarray:
    """uint8 [H, W, C] RGB → float32 [1, C, H, W] with the preset applied."""
    x = pixels.astype(np.float32) * np.float32(p.scale)
    if p.bgr:
        x = x[:, :, ::-1]
    x = (x - np.asarray(p.mean, np.float32)) / np.asarray(p.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def display_pixels(pixels: np.ndarray) -> np.ndarray:
    """What to show of the input: uint8 [H, W, 3]."""
    return np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels[:, :, :3]


def read_npy(path: Path | str) -> np.ndarray:
    """A .npy used exactly as the model input: it must hold float32 (its shape is checked by
    :func:`check_input_shape` once the model is open)."""
    from cnncli.imaging.sources import open_regular

    path = Path(path)
    try:
        with open_regular(path) as f:
            if f.read(6) != b"\x93NUMPY":  # else np.load falls back to pickle and blames that
                raise CnnError(f"cannot read '{path}' as a .npy array: not a .npy file")
            f.seek(0)
            arr = np.load(f, allow_pickle=False)
    except FileNotFoundError:
        raise CnnError(f"cannot read '{path}': no such file") from None
    except (ValueError, OSError, EOFError) as exc:
        raise CnnError(f"cannot read '{path}' as a .npy array: {str(exc).splitlines()[0]}") from None
    if arr.dtype != np.float32:
        raise CnnError(f"'{path}' holds {arr.dtype}; the model input is float32")
    return np.ascontiguousarray(arr)


def check_input_shape(label: str, actual: tuple, declared: tuple) -> None:
    """An array shape against the model input's declared one (None dims are free; batch 1)."""
    ok = len(actual) == len(declared) and all(s is None or s == a for s, a in zip(declared, actual))
    if not ok or not actual or actual[0] != 1:
        want = "x".join("?" if s is None else str(s) for s in declared)
        raise CnnError(f"'{label}' has shape {'x'.join(map(str, actual))}; the model input is {want} (batch 1)")
