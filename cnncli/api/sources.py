"""What the Python API takes as a model (a path, bytes, an ``onnx.ModelProto``) and as an image
(a path, a PIL image, an array), turned into what the engine runs. The CLI goes through here too."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnncli.errors import BadArgument


def load(model: Any):
    """A path (str or os.PathLike, '-' for stdin), bytes or an onnx.ModelProto → LoadedModel."""
    import onnx

    from cnncli.frontend.load import LoadedModel, load_model, parse_model

    if isinstance(model, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)  # the engine edits its model; the caller's stays as it is
        return LoadedModel(copy, f"<{model.graph.name or 'model'}>", None)
    if isinstance(model, (bytes, bytearray, memoryview)):
        return LoadedModel(parse_model(bytes(model), "<bytes>"), "<bytes>", None)
    if isinstance(model, (str, os.PathLike)):
        return load_model(os.fspath(model))
    raise BadArgument("model", f"expected a path, bytes or an onnx.ModelProto, not {type(model).__name__}")


@dataclass
class ImageInput:
    """One image for a projection: the model input and what to show of it."""

    name: str  # the path as given, or '<image>' / '<array>'
    x: np.ndarray  # float32 [1, C, H, W], preprocessed
    pixels: np.ndarray  # uint8 [H, W, 3], the input as shown in figures
    preprocess: dict[str, Any]  # what was done to it (the JSON report's "preprocess")
    bgr: bool  # the input's channels are in BGR order (figures flip them back)
    prep: Any = None  # the Preprocess applied (None for arrays used as they are)


def _as_array(image: Any) -> tuple[str, np.ndarray] | None:
    """(label, float32 [1, C, H, W]) when ``image`` is a tensor used as it is: a .npy path or a
    float array; None when it is a picture to decode and preprocess."""
    from cnncli.imaging.preprocess import read_npy

    if isinstance(image, (str, os.PathLike)) and os.fspath(image).lower().endswith(".npy"):
        return os.fspath(image), read_npy(os.fspath(image))
    if isinstance(image, np.ndarray) and image.dtype.kind == "f":
        x = np.ascontiguousarray(image, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        return "<array>", x
    return None


def open_with_image(model: Any, image: Any, size=None, input_name: str | None = None):
    """Open ``model`` for ``image``: (RunnableModel, array or None); an array fixes the input shape."""
    from cnncli.engine.model_input import open_for_images

    array = _as_array(image)
    if array is not None:
        return open_for_images(load(model), input_name=input_name, array=(array[0], array[1].shape)), array
    return open_for_images(load(model), size, input_name, arrays=True), None


def prepare_image(m, image: Any, array, preset=None, mean=None, std=None, bgr=None) -> ImageInput:
    """The model input for ``image`` with the model's preprocessing (or the one asked for)."""
    from cnncli.imaging.pictures import input_display
    from cnncli.engine.model_input import image_loader, model_preprocess
    from cnncli.imaging.preprocess import image_pixels, to_tensor

    if array is not None:
        label, x = array
        kind = ".npy" if label.lower().endswith(".npy") else "array"
        return ImageInput(label, x, input_display(x), {"preset": f"none ({kind} used as is)"}, False)
    prep = model_preprocess(m, preset, mean, std, bgr)
    size = (m.shape[2], m.shape[3])
    if isinstance(image, (str, os.PathLike)):
        raw, x = image_loader(m, prep)(os.fspath(image))
        name = os.fspath(image)
    else:
        from PIL import Image

        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim not in (2, 3):
                raise BadArgument("image", f"an array image is uint8 [H, W] or [H, W, C], or a float model input; "
                                           f"got {image.dtype} {list(image.shape)}")
            image = Image.fromarray(image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image)
        elif not isinstance(image, Image.Image):
            raise BadArgument("image", f"expected a path, a PIL image or an array, not {type(image).__name__}")
        raw = image_pixels(image, m.shape[1], size)
        x = to_tensor(raw, prep)
        name = "<image>"
    from cnncli.imaging.preprocess import display_pixels

    info = {**prep.describe(), "size": [size[0], size[1]]}
    return ImageInput(name, x, display_pixels(raw), info, prep.bgr, prep)
