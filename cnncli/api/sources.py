"""The one way every command opens what it is given: a model (a path, '-' for stdin, bytes, an
``onnx.ModelProto``) as a LoadedModel (:func:`load`), analysed for costing (:func:`analysed`) or
opened to run on images (:func:`open_with_image`); an image (a path, a PIL image, an array) as
the model input (:func:`prepare_image`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnncli.errors import BadArgument


def load(model: Any):
    """A path (str or os.PathLike, '-' for stdin), bytes or an onnx.ModelProto → LoadedModel."""
    import onnx

    from cnncli.frontend.load import LoadedModel, load_model, open_parsed

    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, onnx.ModelProto):  # checked as a file would be; the engine edits its own copy
        name = f"<{model.graph.name or 'model'}>"
        return open_parsed(model.SerializeToString(), name)
    if isinstance(model, (bytes, bytearray, memoryview)):
        return open_parsed(bytes(model), "<bytes>")
    if isinstance(model, (str, os.PathLike)):
        return load_model(os.fspath(model))
    raise BadArgument("model", f"expected a path, bytes or an onnx.ModelProto, not {type(model).__name__}")


def model_identity(model: Any, opened) -> str:
    """What tells ``model``'s outputs apart from another model's (cnncli.imaging.naming): a file's
    resolved path; a model given as bytes, a ModelProto or on standard input: a hash of ``opened``
    (the LoadedModel or RunnableModel made of it)."""
    from cnncli.frontend.load import LoadedModel
    from cnncli.imaging.naming import data_identity, path_identity

    source = model.source if isinstance(model, LoadedModel) else model
    if isinstance(source, (str, os.PathLike)) and os.fspath(source) != "-":
        return path_identity(os.fspath(source))
    return data_identity(opened.model.SerializeToString())


def image_identity(image: Any) -> str:
    """What tells ``image``'s outputs apart from another image's: a file's resolved path; an array
    or a PIL image: a hash of its pixels, their type and shape."""
    from cnncli.imaging.naming import data_identity, path_identity

    if isinstance(image, (str, os.PathLike)):
        return path_identity(os.fspath(image))
    if isinstance(image, np.ndarray):
        return data_identity(str(image.dtype), str(image.shape), np.ascontiguousarray(image).tobytes())
    return data_identity(str(image.mode), str(image.size), image.tobytes())  # a PIL image


def analysed(model: Any, options, warnings) -> tuple[Any, Any]:
    """(LoadedModel, analysed Graph) of ``model`` at the ShapeOptions' batch and input shapes;
    absent external data and the analysis's own notes go to ``warnings``."""
    from cnncli.frontend.graph import analyse

    loaded = load(model)
    if loaded.missing_external:
        warnings.add(f"external data file '{loaded.missing_external[0]}' is missing; "
                     "analysing from shapes alone (weights are not needed for costs)")
    graph = analyse(loaded.model, batch=options.batch, input_shapes=dict(options.input_shapes))
    for message in graph.warnings:
        warnings.add(message)
    return loaded, graph


def inputs_of(graph) -> list[dict[str, Any]]:
    """The analysed graph's inputs as the JSON reports list them (name, shape, dtype)."""
    return [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in graph.inputs]


def inputs_text(inputs: list[dict[str, Any]]) -> str:
    """'x 1x3x224x224, y 1x10' for a title."""
    return ", ".join(f"{i['name']} {'x'.join(map(str, i['shape']))}" for i in inputs)


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
        label, x = os.fspath(image), read_npy(os.fspath(image))
    elif isinstance(image, np.ndarray) and image.dtype.kind == "f":
        label, x = "<array>", np.ascontiguousarray(image, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
    else:
        return None
    _check_not_empty(x.shape, "a model input [1, C, H, W]")
    if not np.isfinite(x).all():
        raise BadArgument("image", f"'{label}' holds NaN or infinite values: a model input is finite numbers")
    return label, x


def _check_not_empty(shape: tuple, what: str) -> None:
    """A picture or model input with a dim of 0 holds no pixels: refused (it projected a blank)."""
    if 0 in shape:
        raise BadArgument("image", f"the image is empty ({'x'.join(map(str, shape))}): give {what} with pixels")


def _check_picture(image: Any) -> None:
    """A picture given in memory (a uint8 array or a PIL image) that can be one, with pixels."""
    from PIL import Image

    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
            raise BadArgument("image", f"an array image is uint8 [H, W] or [H, W, C] (C 1, 3 or 4), or a float "
                                       f"model input; got {image.dtype} {list(image.shape)}")
        _check_not_empty(image.shape, "a uint8 array [H, W(, C)]")
    elif isinstance(image, Image.Image):
        _check_not_empty((image.height, image.width), "a PIL image")
    else:
        raise BadArgument("image", f"expected a path, a PIL image or an array, not {type(image).__name__}")


def open_with_image(model: Any, image: Any, size=None, input_name: str | None = None):
    """Open ``model`` for ``image``: (RunnableModel, array or None); an array fixes the input shape.
    The image is checked first: an empty one (a dim of 0) is refused before the model is read."""
    from cnncli.engine.model_input import open_for_images

    array = _as_array(image)
    if array is None and not isinstance(image, (str, os.PathLike)):
        _check_picture(image)
    if array is not None:
        m = open_for_images(load(model), input_name=input_name, array=(array[0], array[1].shape))
        if array[1].ndim == len(m.shape) - 1:  # a [C, H, W] array for a model input without a batch axis
            array = (array[0], array[1][None])
        return m, array
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

        _check_picture(image)
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image)
        raw = image_pixels(image, m.shape[1], size)
        x = to_tensor(raw, prep)
        name = "<image>"
    from cnncli.imaging.preprocess import display_pixels

    info = {**prep.describe(), "size": [size[0], size[1]]}
    return ImageInput(name, x, display_pixels(raw), info, prep.bgr, prep)
