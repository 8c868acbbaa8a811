"""Where a model's external data may be read from: only files inside the model's own folder.

A location is refused, before anything on disk is looked at, when it is absolute or climbs out
with ``..``; then, for the rest, when the path resolves (through symlinks) outside the folder.
The check is cnncli's own, so it holds whatever onnx version is installed (onnx 1.15 follows a
symlinked data file) and gives one line instead of onnx's ValidationError.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from typing import Iterator

import onnx
from onnx import TensorProto

from cnncli.errors import ModelError

_DRIVE = re.compile(r"^[A-Za-z]:")


def escapes_lexically(location: str) -> str | None:
    """Why ``location`` is refused from its text alone (no file system access), or None."""
    if not location:
        return "it is empty"
    if "\x00" in location:
        return "it contains a NUL byte"
    text = location.replace("\\", "/")
    if text.startswith("/") or _DRIVE.match(text) or os.path.isabs(location):
        return "it is an absolute path"
    depth = 0
    for part in PurePosixPath(text).parts:
        if part == "..":
            depth -= 1
            if depth < 0:
                return "it climbs out of the model's folder with '..'"
        elif part not in (".", ""):
            depth += 1
    return None


def check_locations(locations: list[str], base_dir: Path | None, name: str) -> None:
    """Refuse the model when any external data location lies outside ``base_dir``.

    Locations are first judged by their text alone; only those that stay inside are resolved
    (through ``base_dir`` and symlinks inside it) to catch a link that points outside.
    """
    for location in locations:
        why = escapes_lexically(location)
        if why is not None:
            raise ModelError(
                f"'{name}' keeps external data at '{location}', outside the model's folder ({why}); refusing to read it"
            )
    if base_dir is None:
        return
    root = os.path.realpath(base_dir)
    for location in locations:
        real = os.path.realpath(os.path.join(root, location))
        if os.path.commonpath([root, real]) != root:
            raise ModelError(
                f"'{name}' keeps external data at '{location}', which resolves outside the model's folder "
                "(a symbolic link); refusing to read it"
            )


def _graph_tensors(graph, stack: list) -> Iterator[TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    yield from _node_tensors(graph.node, stack)


def _node_tensors(nodes, stack: list) -> Iterator[TensorProto]:
    for node in nodes:
        for a in node.attribute:
            # every tensor-holding field, whatever the attribute's declared type says: a stray
            # field is still a tensor some reader may look at
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            for sparse in (a.sparse_tensor,) if a.HasField("sparse_tensor") else ():
                yield sparse.values
                yield sparse.indices
            for sparse in a.sparse_tensors:
                yield sparse.values
                yield sparse.indices
            if a.HasField("g"):
                stack.append(a.g)
            stack.extend(a.graphs)


def all_tensors(model: onnx.ModelProto) -> Iterator[TensorProto]:
    """Every TensorProto in ``model``: initializers and sparse initializers (values and indices)
    of the graph and of every subgraph (If, Loop, Scan bodies, at any depth), the tensors of
    every node attribute (Constant's value and sparse_value, ConstantOfShape's value, any op's
    TENSOR(S) and SPARSE_TENSOR(S) attributes), those of model-local functions' nodes and of
    training-info graphs. onnx's own iterator (external_data_helper._get_all_tensors) leaves
    sparse tensors out."""
    stack = [model.graph]
    for info in model.training_info:
        stack.extend((info.initialization, info.algorithm))
    for function in model.functions:
        yield from _node_tensors(function.node, stack)
    while stack:
        yield from _graph_tensors(stack.pop(), stack)


def external_tensors(model: onnx.ModelProto) -> Iterator[TensorProto]:
    """The tensors of ``model`` (anywhere, see :func:`all_tensors`) whose data lives in a file."""
    for tensor in all_tensors(model):
        if tensor.data_location == TensorProto.EXTERNAL:
            yield tensor


def location_of(tensor: TensorProto) -> list[str]:
    """The locations an external tensor names (a writer may repeat the key: each is checked;
    none at all reads as the empty location, which the check refuses)."""
    found = [e.value for e in tensor.external_data if e.key == "location"]
    return found or [""]


def external_locations(model: onnx.ModelProto, data: bytes | None = None) -> list[str]:
    """Every location ``model``'s external tensors name, in order, each once. ``data``, the
    serialized model when at hand, spares the walk when no ``location`` key can be in it (the
    key's bytes appear as they are in any serialized model that has one)."""
    if data is not None and b"location" not in data:
        return []
    seen: dict[str, None] = {}
    for tensor in external_tensors(model):
        for location in location_of(tensor):
            seen.setdefault(location, None)
    return list(seen)


# external tensors up to this many elements (shape and axes tensors) are read in: shape
# inference needs their values, and they cost a few bytes each
SMALL_EXTERNAL = 64


def _read_in(tensor: TensorProto, base_dir: Path) -> None:
    """Load one external tensor from ``base_dir`` (its location already checked) and make it a
    plain tensor (onnx 1.15's loader leaves the location fields in place)."""
    from onnx.external_data_helper import load_external_data_for_tensor

    load_external_data_for_tensor(tensor, str(base_dir))
    tensor.data_location = TensorProto.DEFAULT
    del tensor.external_data[:]


def inline_small(model: onnx.ModelProto, base_dir: Path, present: set[str]) -> None:
    """Read in the external tensors of at most SMALL_EXTERNAL elements whose file is present."""
    import math

    for tensor in list(external_tensors(model)):
        locations = location_of(tensor)
        if len(locations) != 1 or locations[0] not in present or math.prod(tensor.dims) > SMALL_EXTERNAL:
            continue
        try:
            _read_in(tensor, base_dir)
        except Exception:  # unreadable or out of range: leave it external, shapes may stay unknown
            continue


def load_all(model: onnx.ModelProto, base_dir: Path | None, name: str) -> None:
    """Read every external tensor of ``model`` (subgraphs, attributes and sparse tensors too) in
    from ``base_dir``, each location checked first; afterwards none is left for onnxruntime to
    look for (it would look relative to the current folder: it is given the model's bytes)."""
    tensors = list(external_tensors(model))
    if not tensors:
        return
    locations = list(dict.fromkeys(loc for t in tensors for loc in location_of(t)))
    check_locations(locations, base_dir, name)
    if base_dir is None:
        raise ModelError(f"'{name}' keeps external data in '{locations[0]}', and a model read from "
                         "standard input, bytes or a ModelProto has no folder to find it in")
    for tensor in tensors:
        if len(location_of(tensor)) != 1:
            raise ModelError(f"'{name}' is damaged: tensor '{tensor.name}' names several external data locations")
        try:
            _read_in(tensor, base_dir)
        except Exception as exc:  # onnx's ValidationError, a short file, an offset past its end
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"cannot read the external data of '{name}': {first}") from None


def strip_external(model: onnx.ModelProto) -> None:
    """Make every external tensor of ``model`` (a throwaway copy) a tensor of its dims and type
    with no data, so that no reader of the copy (onnxruntime's symbolic shape inference reads
    Constant values with ``numpy_helper.to_array``, relative to the current folder) opens a file."""
    for tensor in list(external_tensors(model)):
        tensor.data_location = TensorProto.DEFAULT
        del tensor.external_data[:]
