"""Scatter (the deprecated ScatterElements, opsets 9-10), TensorScatter (a KV-cache write) and
Unique's values.

Each output element is a copy of one input element, so, as for the gathers (gather.py), the
signal goes back to the place it was copied from: an overwritten element of the data gets none,
an update the signal at the place it was written. Unique's values are a gather of the input at the
forward run's ``indices`` (each value's first occurrence); its other outputs are indices and
counts, which carry no signal.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from cnncli.reverse.builder import Builder, carries_signal, shape_of, unsupported
from cnncli.reverse.gather import add_back, copy_map, element_map, numbered, scatter_back, take_back, whole
from cnncli.reverse.rules import register


def _known(b: Builder, node, slot: int) -> np.ndarray | None:
    if slot >= len(node.input) or not node.input[slot]:
        return None
    v = b.value(node.input[slot])
    if v is None:
        raise unsupported(node, "with indices computed from the input's values is not supported")
    return v


@register("Scatter", values=(1,))
def _scatter(b: Builder, node, a, grads) -> dict:
    """y = data with the updates written at the indices along ``axis``."""
    data, upd = node.input[0], node.input[2]
    xs, us = shape_of(b, data), shape_of(b, upd)
    pos = element_map(_known(b, node, 1), xs, int(a.get("axis", 0)) % len(xs))
    out, g = {}, grads[0]
    if carries_signal(b, data):
        kept = np.ones(int(np.prod(xs)), bool)
        kept[pos.reshape(-1) - 1] = False
        out[data] = b.op("Mul", [g, b.const(kept.reshape(xs), "kept")], "unscatter")
    if carries_signal(b, upd):
        du = take_back(b, g, pos, xs, us, whole(xs, us))
        out[upd] = b.op("Add", [out[upd], du], "acc") if upd in out else du
    return out


@register("TensorScatter", values=(2,))
def _tensor_scatter(b: Builder, node, a, grads) -> dict:
    """present = past_cache with ``update`` written along ``axis`` from each batch row's write
    index (linear or circular): the copy maps of both, found by running the op on numbers."""
    past, upd = node.input[0], node.input[1]
    ps, us = shape_of(b, past), shape_of(b, upd)
    idx = _known(b, node, 2)
    extra = {} if idx is None else {2: idx}
    span = whole(ps, us)
    out = {}
    if carries_signal(b, past):
        src = copy_map(b, node, {0: numbered(ps), 1: np.zeros(us, np.int64), **extra})
        out[past] = b.op("Mul", [grads[0], b.const(src != 0, "kept")], "unwritten")
    if carries_signal(b, upd):
        src = copy_map(b, node, {0: np.zeros(ps, np.int64), 1: numbered(us), **extra})
        du = add_back(b, grads[0], src, us, span)
        out[upd] = b.op("Add", [out[upd], du], "acc") if upd in out else du
    return out


@register("Unique")
def _unique(b: Builder, node, a, grads) -> dict:
    """Y = X (flattened, or along ``axis``) at the forward run's first-occurrence indices: the
    signal goes back there (a value's other occurrences get none, as for a gather). Y's length
    depends on the values, so a path through it needs its shape declared in the model."""
    x = node.input[0]
    xs = shape_of(b, x)
    if len(node.output) < 2 or not node.output[1]:
        raise unsupported(node, "without its indices output is not supported")
    idx = b.op("Cast", [b.fwd(node.output[1])], "unique_idx", to=TensorProto.INT64)
    if "axis" not in a:  # over the whole tensor: one signal shaped as Y, the batch axis included
        b.one_row = b.one_row or xs[0] != 1
        flat = b.op("Reshape", [grads[0], b.ints([1, -1])], "unique_rows")
        at = b.op("Unsqueeze", [idx, b.ints([0])], "unique_at")
        zeros = b.const(np.zeros((1, int(np.prod(xs))), np.float32), "zeros")
        back = b.op("ScatterElements", [zeros, at, flat], "unique_T", axis=1, reduction="add")
        return {x: b.op("Reshape", [back, b.ints(list(xs))], "unique_x")}
    axis = int(a["axis"]) % len(xs)
    if axis == 0:
        raise unsupported(node, "along the batch axis is not supported")
    shape = [1] * len(xs)  # one index per slice along ``axis``, spread over the other axes
    shape[axis] = -1
    return {x: scatter_back(b, grads[0], b.op("Reshape", [idx, b.ints(shape)], "unique_at"), xs, axis)}
