"""Opening a model for running it, choosing its image input and preparing images for it.

Shared by `cnn project`, `cnn top` and `cnn features`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from cnncli.errors import BadArgument, CnnError
from cnncli.frontend.graph import Graph
from cnncli.imaging.preprocess import Preprocess


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


def open_for_images(loaded, size: tuple[int, int] | None = None, input_name: str | None = None,
                    array: tuple[str, tuple] | None = None, arrays: bool = False) -> RunnableModel:
    """Bring a LoadedModel's weights in (cnncli.api.sources.load opens every form of model) and
    fix its image input to [1, C, H, W].

    ``array`` = (label, shape) of a .npy input: its shape is checked and used instead.
    ``arrays``: the caller also takes arrays (cnn project's .npy), so errors may suggest one.
    The model's other inputs, never fed, get placeholder shapes (unknown dims 1) so that the
    analysis goes on; :func:`check_feedable` refuses a target that depends on one of them.
    """
    from cnncli.frontend.graph import analyse, real_inputs
    from cnncli.frontend.load import load_external_weights

    load_external_weights(loaded)
    model = loaded.model
    name = choose_input([i.name for i in real_inputs(model.graph)], input_name)
    declared = declared_shape(model, name)
    batchless = unbatched(declared, None if array is None else tuple(array[1]))
    if array is not None and not batchless and len(declared) == 3 and declared[0] not in (None, 1):
        want = _dims(declared)  # an input without a batch axis, and an array that does not fit it
        raise CnnError(f"'{array[0]}' has shape {_dims(tuple(array[1]))}; the model input is {want}, "
                       f"without a batch axis: give an array of {want} or 1x{want}")
    if batchless:  # [C, H, W]: the model is given a batch axis that a Squeeze drops first
        model = with_batch_axis(model, name)
        declared = (1, *declared)
    if array is not None:
        from cnncli.imaging.preprocess import check_input_shape

        actual = (1, *array[1]) if batchless and len(array[1]) == len(declared) - 1 else tuple(array[1])
        check_input_shape(array[0], actual, declared)
        shape = actual
    else:
        use_array = "; pass a .npy array shaped like it instead" if arrays else ""
        if len(declared) != 4:
            raise CnnError(f"input '{name}' is not an image tensor [N, C, H, W] or [C, H, W]{use_array}")
        from cnncli.costs.receptive import channels_last

        if channels_last(declared):  # [N, H, W, C] (Keras through tf2onnx): it takes images channels-first
            model = with_channels_first(model, name)
            declared = (declared[0], declared[3], declared[1], declared[2])
        channels, h, w = declared[1], declared[2], declared[3]
        if channels is None:
            raise CnnError(f"input '{name}' has no fixed channel count{use_array}")
        if channels not in IMAGE_CHANNELS:
            raise CnnError(f"input '{name}' has {channels} channels; an image gives 1, 3 or 4{use_array}")
        if size is not None:
            if h is not None and w is not None and (h, w) != tuple(size):
                raise BadArgument("--size", f"the model's input is fixed at {h}x{w}")
            h, w = size
        if h is None or w is None:
            raise BadArgument("--size", f"input '{name}' has a symbolic height or width: give --size HxW")
        shape = (1, channels, h, w)
    try:
        graph = analyse(model, batch=1, input_shapes={name: shape, **_placeholder_shapes(model, name)})
    except BadArgument as exc:
        if exc.param != "--input-shape":
            raise
        # the shapes were not given with --input-shape (these commands have no such option): the
        # model's own declaration, or --size, does not fit the model
        if size is not None and array is None:
            raise BadArgument("--size", str(exc)) from None
        raise CnnError(f"the model does not fit its own input shape: {exc}") from None
    # an op whose result mixes the images of a batch (DynamicQuantizeLinear's scale is the whole
    # batch's range) would make each image's values depend on the others: one image a run
    coupled = any(n.op_type in BATCH_COUPLING for n in graph.nodes)
    batchable = bool(declared) and declared[0] is None and not batchless and not coupled
    labels = {p.key: p.value for p in model.metadata_props}
    return RunnableModel(loaded.name, model, graph, name, shape, batchable, labels)


IMAGE_CHANNELS = (1, 3, 4)
BATCH_COUPLING = frozenset({"DynamicQuantizeLinear", "DynamicQuantizeLSTM", "DynamicQuantizeMatMul"})


def unbatched(declared: tuple, array: tuple | None) -> bool:
    """Whether an input declared ``declared`` has no batch axis: [C, H, W] with C 1, 3 or 4 for an
    image; for an array (its shape ``array``), a rank-3 input whose first dim is not 1 that the
    array matches as it is or with a leading axis of one (a [1, H, W] input reads the same
    either way, so it keeps its first axis as the batch)."""
    if len(declared) != 3 or declared[0] is None or declared[0] == 1:
        return False
    if array is None:
        return declared[0] in IMAGE_CHANNELS
    core = array[1:] if len(array) == 4 and array[0] == 1 else array
    return len(core) == 3 and all(d is None or d == a for d, a in zip(declared, core))


def with_batch_axis(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    """A copy of ``model`` whose input ``name`` ([C, H, W]) takes [1, C, H, W] and drops the axis
    at once (a Squeeze into the name its nodes read), so images and arrays go in, and projections
    come back, as for any image model. The model given is left as it is."""
    from onnx import helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    taken = {n for node in out.graph.node for n in (*node.input, *node.output)}
    inner = next(f"{name}_unbatched{i or ''}" for i in range(len(taken) + 1) if f"{name}_unbatched{i or ''}" not in taken)
    _rename_reads(out.graph, name, inner)
    vi = next(v for v in out.graph.input if v.name == name)
    vi.type.tensor_type.shape.dim.insert(0, onnx.TensorShapeProto.Dimension(dim_value=1))
    opset = next((o.version for o in out.opset_import if o.domain in ("", "ai.onnx")), 13)
    if opset >= 13:
        axes = helper.make_tensor(f"{inner}_axes", onnx.TensorProto.INT64, [1], [0])
        out.graph.initializer.append(axes)
        squeeze = helper.make_node("Squeeze", [name, axes.name], [inner], name=f"{inner}_squeeze")
    else:
        squeeze = helper.make_node("Squeeze", [name], [inner], name=f"{inner}_squeeze", axes=[0])
    out.graph.node.insert(0, squeeze)
    return out


def with_channels_first(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    """A copy of ``model`` whose channels-last input ``name`` ([N, H, W, C]) takes [N, C, H, W] and
    turns it channels-last at once (a Transpose into the name its nodes read), so images go in,
    and projections come back, channels-first as for any image model; the exporter's own
    Transpose to channels-first follows. The model given is left as it is."""
    from onnx import helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    taken = {n for node in out.graph.node for n in (*node.input, *node.output)}
    inner = next(f"{name}_nhwc{i or ''}" for i in range(len(taken) + 1) if f"{name}_nhwc{i or ''}" not in taken)
    _rename_reads(out.graph, name, inner)
    shape = next(v for v in out.graph.input if v.name == name).type.tensor_type.shape
    dims = [onnx.TensorShapeProto.Dimension() for _ in range(4)]
    for d, i in zip(dims, (0, 3, 1, 2)):
        d.CopyFrom(shape.dim[i])
    del shape.dim[:]
    shape.dim.extend(dims)
    out.graph.node.insert(0, helper.make_node("Transpose", [name], [inner], name=f"{inner}_transpose", perm=[0, 2, 3, 1]))
    return out


def _rename_reads(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Every read of ``old`` in ``graph`` and the subgraphs that see it (If/Loop/Scan bodies) reads ``new``."""
    for node in graph.node:
        node.input[:] = [new if i == old else i for i in node.input]
        for attr in node.attribute:
            for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                if not any(v.name == old for v in sub.input):  # a body input of that name hides the outer one
                    _rename_reads(sub, old, new)
    for o in graph.output:
        if o.name == old:
            o.name = new


def _dims(shape: tuple) -> str:
    return "x".join("?" if d is None else str(d) for d in shape)


def _placeholder_shapes(model: onnx.ModelProto, fed: str) -> dict[str, tuple[int, ...]]:
    """Shapes for the inputs other than ``fed``: declared dims, 1 where unknown ((1,) when the
    input declares no shape). Nothing feeds them; they only keep the shape analysis going."""
    from cnncli.frontend.graph import real_inputs

    out = {}
    for vi in real_inputs(model.graph):
        if vi.name == fed:
            continue
        if not vi.type.tensor_type.HasField("shape"):
            out[vi.name] = (1,)
            continue
        declared = declared_shape(model, vi.name)
        if None in declared:
            out[vi.name] = tuple(d or 1 for d in declared)
    return out


def check_feedable(m: RunnableModel, tensor: str, command: str) -> None:
    """Refuse a target that depends on a model input other than the image input (a second input,
    or a weight given as a graph input): nothing can feed it."""
    from cnncli.reverse import other_input

    other = other_input(m.graph, m.input_name, tensor)
    if other is not None:
        raise CnnError(f"'{tensor}' also depends on input '{other}', which {command} cannot feed "
                       f"(it feeds only the image input '{m.input_name}'); choose a layer that depends on that input alone")


def check_run_memory(m: RunnableModel, tensor: str, rows: int = 1, reverse_rows: int = 0,
                     limit: int | None = None, hint: str = "") -> None:
    """Refuse, before any image is decoded or run, a run whose estimated memory (see
    :func:`cnncli.engine.memory.run_estimate`) exceeds ``limit`` or the memory available."""
    from cnncli.engine.memory import check_memory, run_estimate

    needed = run_estimate(m.graph, m.input_name, tensor, rows, reverse_rows)
    images = f"{rows} image{'s' if rows > 1 else ''} of {_dims(m.shape[1:])}"
    check_memory(needed, limit, f"this run ({images}, activations up to '{tensor}')", hint)


def image_loader(m: RunnableModel, prep: Preprocess):
    """path -> (uint8 pixels [H, W, C], float32 tensor [1, C, H, W]). The function's
    ``failures`` dict keeps why the first few unreadable images failed (path -> reason)."""
    from cnncli.imaging.preprocess import ImageReadError, read_image, to_tensor

    failures: dict[str, str] = {}

    def load(path: str) -> tuple[np.ndarray, np.ndarray]:
        try:
            raw = read_image(path, m.shape[1], (m.shape[2], m.shape[3]))
        except ImageReadError as exc:
            if len(failures) < 10:
                failures[exc.path] = exc.reason
            raise
        return raw, to_tensor(raw, prep)

    load.failures = failures  # type: ignore[attr-defined]
    return load


def model_preprocess(m: RunnableModel, preset: str | None = None, mean=None, std=None, bgr: bool | None = None) -> Preprocess:
    """How images are prepared for ``m``: ``preset`` when given, else the model's own (metadata
    ``cnncli.preprocess``), else the default for its channel count; mean/std/bgr override fields.
    One choice for project, top, features and the Python API."""
    from cnncli.imaging.preprocess import make_preprocess

    return make_preprocess(m.shape[1], preset or m.labels.get("cnncli.preprocess"), mean, std, bgr)
