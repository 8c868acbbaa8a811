"""Reading an ONNX model from a path or standard input, with clear errors for bad files."""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import onnx
from google.protobuf.message import DecodeError

from cnncli.errors import ModelError
from cnncli.frontend.parsed import note_parsed
from cnncli.frontend.external import check_locations


@dataclass
class LoadedModel:
    model: onnx.ModelProto
    source: str  # the path as given, or "-" for standard input
    base_dir: Path | None  # folder that external data paths are relative to
    missing_external: list[str] = field(default_factory=list)  # external data files not found
    has_external: bool = True  # False: the model is known to name no external data

    @property
    def name(self) -> str:
        return "<stdin>" if self.source == "-" else self.source


# protobuf parses no message over 2 GiB, so no .onnx file is larger (big weights live in external
# data): a larger file, or an endless stream (`cat /dev/zero | cnn stats -`), is refused there
MAX_MODEL_BYTES = 2 << 30
_READ = 1 << 22


def _too_large(name: str) -> ModelError:
    gib = MAX_MODEL_BYTES / (1 << 30)
    return ModelError(f"'{name}' is larger than {gib:g} GiB, more than an ONNX model can hold (protobuf's limit)")


def _read_rest(stream: BinaryIO, head: bytes, name: str) -> bytes:
    """``head`` and the rest of a stream that cannot tell its size, refused past MAX_MODEL_BYTES."""
    parts, total = [head], len(head)
    while chunk := stream.read(_READ):
        total += len(chunk)
        if total > MAX_MODEL_BYTES:
            raise _too_large(name)
        parts.append(chunk)
    return b"".join(parts)


def read_source_bytes(source: str, stdin: BinaryIO | None = None) -> bytes:
    """The model file's bytes, once its first bytes show it can be a model (a large file that
    is not one is refused without being read whole), at most MAX_MODEL_BYTES of them."""
    from cnncli.frontend.sniff import CHUNK, check_model_bytes

    if source == "-":
        stream = stdin if stdin is not None else getattr(sys.stdin, "buffer", None)
        if stream is None:  # `cnn stats - <&-`: Python has no sys.stdin
            raise ModelError("cannot read the model from standard input: it is closed")
        head = stream.read(CHUNK)
        if head:
            check_model_bytes(stream, head, None, "<stdin>")
        return _read_rest(stream, head, "<stdin>")
    path = Path(source)
    if not path.exists():
        raise ModelError(f"cannot read model '{source}': no such file")
    if path.is_dir():
        raise ModelError(f"cannot read model '{source}': it is a directory")
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            regular = stat.S_ISREG(st.st_mode)  # a FIFO or device cannot seek: checked as a pipe
            if regular and st.st_size > MAX_MODEL_BYTES:
                raise _too_large(source)
            head = f.read(CHUNK)
            if head:
                check_model_bytes(f, head, st.st_size if regular else None, source)
            if not regular:
                return _read_rest(f, head, source)
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
    """Every node input must be defined before use (catches truncated or damaged graphs), and
    every tensor is written once: by the graph (an input or an initializer) or by one node."""
    given = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    given.update(t.values.name for t in graph.sparse_initializer)
    known = set(given)
    known.add("")
    writer: dict[str, str] = {}
    for node in graph.node:
        for inp in node.input:
            if inp not in known:
                raise ModelError(
                    f"'{name}' is damaged or truncated: node '{node.name or node.op_type}' "
                    f"reads '{inp}', which nothing defines"
                )
        for out in node.output:
            if out in known and out:
                _written_twice(name, node, out, writer.get(out), out in given)
            known.add(out)
            writer[out] = node.name or node.op_type
    for out in graph.output:
        if out.name not in known:
            raise ModelError(f"'{name}' is damaged or truncated: graph output '{out.name}' is never produced")


def _written_twice(name: str, node: onnx.NodeProto, out: str, first: str | None, by_graph: bool) -> None:
    label = f"node '{node.name or node.op_type}'"
    if list(node.output).count(out) > 1:
        what = f"{label} names its output '{out}' twice"
    elif by_graph:
        what = f"{label} writes '{out}', which is a graph input or initializer"
    else:
        what = f"'{out}' is written twice (by node '{first}' and by {label})"
    raise ModelError(f"'{name}' is damaged: {what} (each tensor must have one writer)")


def open_parsed(data: bytes, name: str, source: str | None = None, base_dir: Path | None = None) -> LoadedModel:
    """The LoadedModel of a model's bytes: parsed and checked (:func:`parse_model`), every
    external data location checked before any of them is looked at (from bytes, stdin or a
    ModelProto, with no folder, all of them are missing). Only tiny external tensors (shapes,
    axes) are read in, from data files that exist."""
    from cnncli.frontend.external import external_locations, inline_small

    model = parse_model(data, name)
    missing, present = [], set()
    locations = external_locations(model, data)
    check_locations(locations, base_dir, name)
    for location in locations:
        if base_dir is None or not os.path.isfile(base_dir / location):
            missing.append(location)
        else:
            present.add(location)
    if present:
        inline_small(model, base_dir, present)
    return LoadedModel(model=model, source=source or name, base_dir=base_dir, missing_external=missing,
                       has_external=bool(locations))


def load_model(source: str, stdin: BinaryIO | None = None) -> LoadedModel:
    """Load the graph without external data: weights that live in other files stay there."""
    data = read_source_bytes(source, stdin)
    name = "<stdin>" if source == "-" else source
    return open_parsed(data, name, source, None if source == "-" else Path(source).resolve().parent)


def load_external_weights(loaded: LoadedModel) -> None:
    """Bring every external tensor into memory (needed to run the model, not to cost it), then
    check that every tensor's data agrees with its dims before anything reads it."""
    if loaded.missing_external:
        raise ModelError(
            f"'{loaded.name}' keeps its weights in '{loaded.missing_external[0]}', which is missing"
        )
    if loaded.has_external:
        from cnncli.frontend.external import load_all

        load_all(loaded.model, loaded.base_dir, loaded.name)
    from cnncli.frontend.wellformed import check_runnable, densify_sparse

    check_runnable(loaded.model, loaded.name)
    densify_sparse(loaded.model, loaded.name)
