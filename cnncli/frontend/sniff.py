"""Recognise a file that is not an ONNX model from its first bytes, before reading it whole.

An ONNX file is a serialized ``ModelProto``: a sequence of top-level fields, each a tag
(field number and wire type) then a value. Walking those tags (a handful in a real model: ir
version, producer, graph, opset imports, ...) and skipping each value by its length costs a few
reads, whatever the file's size; a random or unrelated file fails on its first tag or on a
length that runs past the end. The field table comes from the installed onnx's own descriptor.
"""

from __future__ import annotations

from typing import BinaryIO

import onnx
from google.protobuf.descriptor import FieldDescriptor

from cnncli.errors import ModelError

CHUNK = 1 << 16
_MAX_FIELDS = 100_000  # a model with more top-level fields than this is accepted unchecked


def _wire_types() -> dict[int, set[int]]:
    fixed64 = {FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64}
    fixed32 = {FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_SFIXED32}
    table: dict[int, set[int]] = {}
    for f in onnx.ModelProto.DESCRIPTOR.fields:
        if f.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
            wire = {2}
        elif f.type in fixed64:
            wire = {1, 2}
        elif f.type in fixed32:
            wire = {5, 2}
        else:
            wire = {0, 2}  # varints, or packed when repeated
        table[f.number] = wire
    return table


_FIELDS = _wire_types()


class _Reader:
    """Bytes of a stream by absolute position: the first chunk kept, seeks for the rest."""

    def __init__(self, stream: BinaryIO, head: bytes, size: int | None):
        self.stream, self.head, self.size = stream, head, size
        self.seekable = size is not None
        self.buf, self.buf_at = head, 0

    def byte(self, pos: int) -> int | None:
        if not self.buf_at <= pos < self.buf_at + len(self.buf):
            if not self.seekable:
                return None
            self.stream.seek(pos)
            self.buf, self.buf_at = self.stream.read(64), pos
            if not self.buf:
                return None
        return self.buf[pos - self.buf_at]


def _varint(r: _Reader, pos: int) -> tuple[int | None, int]:
    value = shift = 0
    for i in range(10):
        b = r.byte(pos + i)
        if b is None:
            return None, pos + i
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos + i + 1
    raise ValueError("varint too long")


def check_model_bytes(stream: BinaryIO, head: bytes, size: int | None, name: str) -> None:
    """Raise ModelError unless ``head`` (the first bytes read from ``stream``) can start a
    ModelProto. With ``size`` (a seekable file), every top-level field is walked to the end of
    the file; without it (a pipe), as far as ``head`` goes."""
    r = _Reader(stream, head, size)
    end = size if size is not None else len(head)
    pos = 0
    try:
        for _ in range(_MAX_FIELDS):
            if pos == end:
                return
            tag, pos = _varint(r, pos)
            if tag is None:
                return  # a pipe's first chunk ends inside a tag
            number, wire = tag >> 3, tag & 7
            if wire not in _FIELDS.get(number, ()):
                raise ValueError(f"field {number} wire type {wire}")
            if wire == 0:
                value, pos = _varint(r, pos)
                if value is None:
                    return
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            else:
                length, pos = _varint(r, pos)
                if length is None:
                    return
                pos += length
            if size is not None and pos > size:
                raise ModelError(f"'{name}' is not an ONNX model (truncated or corrupt: a field runs past the end of the file)")
            if size is None and pos >= len(head):
                return  # the rest of a pipe is checked when it is parsed
    except ValueError:
        raise ModelError(f"'{name}' is not an ONNX model (its first bytes are not those of an ONNX model)") from None
