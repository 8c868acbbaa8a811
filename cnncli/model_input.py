"""Opening a model for running it, choosing its image input and preparing images for it.

Shared by `cnn project`, `cnn top` and `cnn features`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from cnncli.errors import BadArgument, CnnError
from cnncli.graph import Graph
from cnncli.preprocess import Preprocess


@dataclass
class RunnableModel:
    name: str
    model: onnx.ModelProto
    graph: Graph  # analysed at batch 1
    input_name: str
    shape: tuple[int, int, int, int]  # [1, C, H, W]
    batchable: bool  # the input's batch dim is symbolic, so several images can go in one run
    labels: dict[str, str]  # metadata_props


def choose_input(names: list[str], wanted: str | None) -> str:
    if wanted is not None:
        if wanted not in names:
            raise BadArgument("--input-name", f"the model has no input '{wanted}' (inputs: {', '.join(names)})")
        return wanted
    if len(names) != 1:
        raise BadArgument("--input-name", f"the model has {len(names)} inputs ({', '.join(names)}); choose one")
    return names[0]


def declared_shape(model: onnx.ModelProto, name: str) -> tuple:
    for vi in model.graph.input:
        if vi.name == name:
            return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                         for d in vi.type.tensor_type.shape.dim)
    return ()


def open_for_images(source: str, size: tuple[int, int] | None = None, input_name: str | None = None,
                    array: tuple[str, tuple] | None = None) -> RunnableModel:
    """Load MODEL with its weights and fix its image input to [1, C, H, W].

    ``array`` = (label, shape) of a .npy input: its shape is checked and used instead.
    """
    from cnncli.graph import analyse, real_inputs
    from cnncli.loading import load_external_weights, load_model

    loaded = load_model(source)
    load_external_weights(loaded)
    model = loaded.model
    name = choose_input([i.name for i in real_inputs(model.graph)], input_name)
    declared = declared_shape(model, name)
    if array is not None:
        from cnncli.preprocess import check_input_shape

        check_input_shape(array[0], tuple(array[1]), declared)
        shape = tuple(array[1])
    else:
        if len(declared) != 4:
            raise CnnError(f"input '{name}' is not an image tensor [N, C, H, W]; pass a .npy array")
        channels, h, w = declared[1], declared[2], declared[3]
        if channels is None:
            raise CnnError(f"input '{name}' has no fixed channel count; pass a .npy array")
        if size is not None:
            if h is not None and w is not None and (h, w) != tuple(size):
                raise BadArgument("--size", f"the model's input is fixed at {h}x{w}")
            h, w = size
        if h is None or w is None:
            raise BadArgument("--size", f"input '{name}' has a symbolic height or width: give --size HxW")
        shape = (1, channels, h, w)
    graph = analyse(model, batch=1, input_shapes={name: shape})
    batchable = bool(declared) and declared[0] is None
    labels = {p.key: p.value for p in model.metadata_props}
    return RunnableModel(loaded.name, model, graph, name, shape, batchable, labels)


def image_loader(m: RunnableModel, prep: Preprocess):
    """path -> (uint8 pixels [H, W, C], float32 tensor [1, C, H, W])."""
    from cnncli.preprocess import read_image, to_tensor

    def load(path: str) -> tuple[np.ndarray, np.ndarray]:
        raw = read_image(path, m.shape[1], (m.shape[2], m.shape[3]))
        return raw, to_tensor(raw, prep)

    return load
