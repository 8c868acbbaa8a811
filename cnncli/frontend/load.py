"""Reading an ONNX model from a path or standard input, with clear errors for bad files."""

from __future__ import annotations

import math
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import onnx
from google.protobuf.message import DecodeError

from cnncli.errors import ModelError
from cnncli.frontend.damage import note_parsed
from cnncli.frontend.external import check_locations


@dataclass
class LoadedModel:
    model: onnx.ModelProto
    source: str  # the path as given, or "-" for standard input
    base_dir: Path | None  # folder that external data paths are relative to
    missing_external: list[str] = field(default_factory=list)  # external data files not found

    @property
    def name(self) -> str:
        return "<stdin>" if self.source == "-" else self.source


def read_source_bytes(source: str, stdin: BinaryIO | None = None) -> bytes:
    """The model file's bytes, once its first bytes show it can be a model (a large file that
    is not one is refused without being read whole)."""
    from cnncli.frontend.sniff import CHUNK, check_model_bytes

    if source == "-":
        stream = stdin if stdin is not None else sys.stdin.buffer
        head = stream.read(CHUNK)
        if head:
            check_model_bytes(stream, head, None, "<stdin>")
        return head + stream.read()
    path = Path(source)
    if not path.exists():
        raise ModelError(f"cannot read model '{source}': no such file")
    if path.is_dir():
        raise ModelError(f"cannot read model '{source}': it is a directory")
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            regular = stat.S_ISREG(st.st_mode)  # a FIFO or device cannot seek: checked as a pipe
            head = f.read(CHUNK)
            if head:
                check_model_bytes(f, head, st.st_size if regular else None, source)
            if not regular:
                return head + f.read()
            f.seek(0)
            return f.read()
    except OSError as exc:
        raise ModelError(f"cannot read model '{source}': {exc.strerror or exc}") from None


def parse_model(data: bytes, name: str) -> onnx.ModelProto:
    if not data:
        raise ModelError(f"'{name}' is empty, not an ONNX model")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise ModelError(f"'{name}' is not an ONNX model (truncated or corrupt protobuf: {exc})") from None
    if model.ir_version <= 0 or not model.HasField("graph") or not model.graph.node:
        raise ModelError(f"'{name}' is not an ONNX model (a protobuf without a model graph)")
    _check_references(model.graph, name)
    note_parsed(model, name)
    return model


def _check_references(graph: onnx.GraphProto, name: str) -> None:
    """Every node input must be defined before use: catches truncated or damaged graphs."""
    known = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    known.update(t.values.name for t in graph.sparse_initializer)
    known.add("")
    for node in graph.node:
        for inp in node.input:
            if inp not in known:
                raise ModelError(
                    f"'{name}' is damaged or truncated: node '{node.name or node.op_type}' "
                    f"reads '{inp}', which nothing defines"
                )
        known.update(node.output)
    for out in graph.output:
        if out.name not in known:
            raise ModelError(f"'{name}' is damaged or truncated: graph output '{out.name}' is never produced")


def _all_tensors(model: onnx.ModelProto):
    """Initializers, and the tensors of Constant nodes (onnx.save keeps other attributes inline
    unless told otherwise)."""
    yield from model.graph.initializer
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.type == onnx.AttributeProto.TENSOR:
                    yield a.t


def external_data_files(model: onnx.ModelProto) -> list[str]:
    """Locations of the external data files the model's tensors refer to, in order."""
    seen: dict[str, None] = {}
    for tensor in _all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location":
                    seen.setdefault(entry.value, None)
    return list(seen)


# external tensors up to this many elements (shape and axes tensors) are read in: shape
# inference needs their values, and they cost a few bytes each
_SMALL_EXTERNAL = 64


def _inline_small_external(model: onnx.ModelProto, base_dir: Path, present: set[str]) -> None:
    from onnx.external_data_helper import load_external_data_for_tensor

    for tensor in model.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL or math.prod(tensor.dims) > _SMALL_EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), None)
        if location not in present:
            continue
        try:
            load_external_data_for_tensor(tensor, str(base_dir))
        except Exception:  # unreadable or out of range: leave it external, shapes may stay unknown
            continue


def load_model(source: str, stdin: BinaryIO | None = None) -> LoadedModel:
    """Load the graph without external data: weights that live in other files stay there.

    Only tiny external tensors (shapes, axes) are read in, from data files that exist.
    """
    data = read_source_bytes(source, stdin)
    name = "<stdin>" if source == "-" else source
    model = parse_model(data, name)
    base_dir = None if source == "-" else Path(source).resolve().parent
    missing, present = [], set()
    locations = external_data_files(model)
    check_locations(locations, base_dir, name)  # before any of them is looked at
    for location in locations:
        if base_dir is None or not os.path.isfile(base_dir / location):
            missing.append(location)
        else:
            present.add(location)
    if present:
        _inline_small_external(model, base_dir, present)
    return LoadedModel(model=model, source=source, base_dir=base_dir, missing_external=missing)


def load_external_weights(loaded: LoadedModel) -> None:
    """Bring external weights into memory (needed to run the model, not to cost it)."""
    if loaded.missing_external:
        raise ModelError(
            f"'{loaded.name}' keeps its weights in '{loaded.missing_external[0]}', which is missing"
        )
    locations = external_data_files(loaded.model)
    if loaded.base_dir is not None and locations:
        from onnx.external_data_helper import load_external_data_for_model

        check_locations(locations, loaded.base_dir, loaded.name)
        try:
            load_external_data_for_model(loaded.model, str(loaded.base_dir))
        except Exception as exc:  # onnx's ValidationError, a short file, an offset past its end
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"cannot read the external data of '{loaded.name}': {first}") from None
