"""Images named by URI in a list for `cnn top --engine ray` (s3://, gs://, hdfs://, file://, …
any filesystem pyarrow knows, as Ray's own readers use), read with the local engine's code.

A ``file://`` URI is a local path spelt as a URL (``%20`` for a space): pyarrow decodes it and
the local engine's reader reads it, with the local engine's checks (a FIFO or a folder is an
unreadable image, never a read that waits forever). Any other URI must name a regular file on its
filesystem; its bytes are read through pyarrow and decoded by the local engine's pixel code.
"""

from __future__ import annotations

import re
from typing import Callable

import numpy as np

from cnncli.scale.runtime import first_line

URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_LOCALHOST = re.compile(r"^file://localhost/", re.IGNORECASE)  # RFC 8089: the same as file:///


def is_uri(path: str) -> bool:
    return bool(URI.match(path))


def read_pixels(path: str, image_channels: int, size: tuple[int, int]) -> np.ndarray:
    """uint8 pixels [H, W, C] of the image at ``path``, a local path or a URI, as the local
    engine's ``read_image`` gives them; `ImageReadError` for an image that cannot be read."""
    from cnncli.imaging.preprocess import read_image

    if not is_uri(path):
        return read_image(path, image_channels, size)
    import pyarrow.fs

    from cnncli.imaging.preprocess import ImageReadError

    try:
        fs, inner = pyarrow.fs.FileSystem.from_uri(_LOCALHOST.sub("file:///", path))
    except (ValueError, OSError) as exc:  # an unknown scheme, a bad URI, a filesystem not at hand
        raise ImageReadError(path, first_line(exc)) from None
    if isinstance(fs, pyarrow.fs.LocalFileSystem):
        return read_image(inner, image_channels, size)
    return _remote_pixels(fs, inner, path, image_channels, size)


def _remote_pixels(fs, inner: str, path: str, image_channels: int, size: tuple[int, int]) -> np.ndarray:
    import io

    import pyarrow.fs
    from PIL import Image, UnidentifiedImageError

    from cnncli.imaging.preprocess import ImageReadError, image_pixels

    try:
        kind = fs.get_file_info(inner).type
        if kind != pyarrow.fs.FileType.File:
            raise ImageReadError(path, "no such file" if kind == pyarrow.fs.FileType.NotFound
                                 else "it is a directory" if kind == pyarrow.fs.FileType.Directory
                                 else "not a regular file")
        with fs.open_input_file(inner) as f:
            data = f.read()
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return image_pixels(im, image_channels, size)
    except UnidentifiedImageError:
        raise ImageReadError(path, "not an image Pillow can read") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageReadError(path, first_line(exc)) from None


def uri_loader(m, prep) -> Callable[[str], tuple]:
    """The local engine's loader (``image_loader``: path -> (uint8 pixels, float32 input)) that
    also reads URIs: the driver projects the kept images of a Ray scan with it."""
    from cnncli.engine.model_input import image_loader
    from cnncli.imaging.preprocess import to_tensor

    local = image_loader(m, prep)

    def load(path: str) -> tuple:
        if not is_uri(path):
            return local(path)
        raw = read_pixels(path, m.shape[1], (m.shape[2], m.shape[3]))
        return raw, to_tensor(raw, prep)

    load.failures = local.failures  # type: ignore[attr-defined]
    return load
