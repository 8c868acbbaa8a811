"""Gathers and scatters: GatherElements, GatherND, Compress, ScatterElements, ScatterND, TopK.

Each output element is a copy of one input element (or of one update), so the adjoint adds the
signal back at the place it was copied from. Where the indices are known when the reverse graph
is built (stored, or computed without the input's values), the copy map is worked out once by
running the op itself (onnx's reference evaluator) on the numbers 1…n; where they come from the
input's values (TopK, a GatherElements fed by an ArgMax), the reverse graph scatters with the
forward run's indices.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from cnncli.reverse.builder import Builder, carries_signal, shape_of, unsupported
from cnncli.reverse.rules import register
from cnncli.reverse.shape_ops import scatter_along


def _opset(b: Builder) -> int:
    return next((o.version for o in b.graph.model.opset_import if o.domain in ("", "ai.onnx")), 17)


def copy_map(b: Builder, node, feeds: dict[int, np.ndarray]) -> np.ndarray:
    """Run ``node`` (its attributes, opset and indices) on ``feeds`` (input slot -> value) with onnx's
    reference evaluator: integer data numbered 1…n shows where each output element came from."""
    from onnx.reference import ReferenceEvaluator

    names = [f"in{i}" if i in feeds else "" for i in range(max(feeds) + 1)]
    one = helper.make_node(node.op_type, names, ["out"], **{a.name: helper.get_attribute_value(a) for a in node.attribute})
    graph = helper.make_graph([one], "copy_map", [], [helper.make_tensor_value_info("out", TensorProto.UNDEFINED, None)],
                              [onnx.numpy_helper.from_array(np.asarray(v), f"in{i}") for i, v in feeds.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _opset(b))])
    return np.asarray(ReferenceEvaluator(model).run(None, {})[0])


def numbered(shape) -> np.ndarray:
    """1…n in ``shape`` (0 is left for "no element")."""
    return np.arange(1, int(np.prod(shape)) + 1, dtype=np.int64).reshape(shape)


def _indices(b: Builder, node, slot: int) -> np.ndarray:
    v = b.value(node.input[slot])
    if v is None:
        raise unsupported(node, "with indices computed from the input's values is not supported")
    return v


def whole(*shapes) -> bool:
    """Whether a copy map must span the batch axis: batch 1 in and out, each reverse row is one
    image's signal (rows stacked on that axis); otherwise the op moves values along the batch
    axis and its reverse takes one signal shaped as the output (the reverse rows are its batch)."""
    return any(s[0] != 1 for s in shapes)


def _flat(b: Builder, g: str, shape, span: bool, hint: str) -> str:
    """``g`` as [rows, |shape[1:]|] (per batch row) or [1, |shape|] (spanning the batch axis)."""
    if span:
        return b.op("Reshape", [g, b.ints([1, int(np.prod(shape))])], hint)
    return b.reshape(g, [1, int(np.prod(shape))], hint)


def _unflat(b: Builder, g: str, shape, span: bool, hint: str) -> str:
    return b.op("Reshape", [g, b.ints(list(shape))], hint) if span else b.reshape(g, shape, hint)


def add_back(b: Builder, g: str, src: np.ndarray, xs, span: bool = False) -> str:
    """The adjoint of y = x.flat[src − 1] (per batch row, or over the whole tensor when ``span``;
    0 in ``src``: a constant, no signal)."""
    m = int(src.size)
    g = _flat(b, g, src.shape, span, "copies")
    if (src == 0).any():
        g = b.op("Mul", [g, b.const((src != 0).reshape(1, m), "copied")], "mask")
    flat = scatter_along(b, g, [1, int(np.prod(xs))], 1, np.maximum(src.reshape(-1) - 1, 0))
    return _unflat(b, flat, xs, span, "uncopied")


def take_back(b: Builder, g: str, pos: np.ndarray, ys, us, span: bool = False) -> str:
    """The adjoint of writing updates u into y.flat[pos − 1]: each update gets the signal there."""
    taken = b.op("Gather", [_flat(b, g, ys, span, "flat"), b.ints(pos.reshape(-1) - 1)], "taken", axis=1)
    return _unflat(b, taken, us, span, "updates")


@register("GatherND", values=(1,))
def _gather_nd(b: Builder, node, a, grads) -> dict:
    x = node.input[0]
    xs, ys = shape_of(b, x), shape_of(b, node.output[0])
    src = copy_map(b, node, {0: numbered(xs), 1: _indices(b, node, 1)})
    return {x: add_back(b, grads[0], src, xs, whole(xs, ys))}


@register("Compress", values=(1,))
def _compress(b: Builder, node, a, grads) -> dict:
    x = node.input[0]
    xs = shape_of(b, x)
    cond = _indices(b, node, 1).reshape(-1)
    if "axis" in a and int(a["axis"]) % len(xs) != 0:
        axis = int(a["axis"]) % len(xs)
        return {x: scatter_along(b, grads[0], xs, axis, np.flatnonzero(cond[: xs[axis]]))}
    # along the batch axis, or flattened (axis absent): the copy map over the whole tensor
    src = copy_map(b, node, {0: numbered(xs), 1: cond})
    if src.shape == tuple(xs) and xs[0] == 1:  # batch 1 kept: the rows pass
        return {x: grads[0]}
    return {x: add_back(b, grads[0], src, xs, span=True)}


@register("GatherElements")
def _gather_elements(b: Builder, node, a, grads) -> dict:
    """Scatter-add with the forward indices (read at run time: they may come from the input)."""
    x = node.input[0]
    xs, ys = shape_of(b, x), shape_of(b, node.output[0])
    axis = int(a.get("axis", 0)) % len(xs)
    if axis == 0:  # the indices along the batch axis: known, a copy map
        return {x: add_back(b, grads[0], element_map(_indices(b, node, 1), xs, axis), xs, whole(xs, ys))}
    if xs[0] != ys[0]:  # indices of another batch than the data's: known, a copy map
        return {x: add_back(b, grads[0], element_map(_indices(b, node, 1), xs, axis), xs, span=True)}
    return {x: scatter_back(b, grads[0], b.fwd(node.input[1]), xs, axis)}


def element_map(idx: np.ndarray, xs, axis: int) -> np.ndarray:
    """GatherElements' copy map: the place (1-based, flat in ``xs``) each index picks."""
    coords = list(np.indices(idx.shape))
    coords[axis] = np.where(idx < 0, idx + xs[axis], idx)
    return np.ravel_multi_index(tuple(coords), xs) + 1


def scatter_back(b: Builder, g: str, idx: str, xs, axis: int) -> str:
    """Add ``g`` into zeros shaped ``xs`` (batch free) at the forward indices ``idx`` along ``axis``."""
    idx = b.op("Cast", [idx], "idx64", to=TensorProto.INT64)
    neg = b.op("Less", [idx, b.ints(0)], "negative")
    idx = b.op("Where", [neg, b.op("Add", [idx, b.ints(xs[axis])]), idx], "idx_pos")
    idx = b.op("Expand", [idx, b.op("Shape", [g])], "idx_rows")
    return b.op("ScatterElements", [b.zeros_like_batch(g, xs), idx, g], "scatter_back", axis=axis, reduction="add")


@register("TopK")
def _topk(b: Builder, node, a, grads) -> dict:
    """Values: the signal goes back to the selected positions (the forward run's indices);
    the indices output carries none."""
    x = node.input[0]
    xs = shape_of(b, x)
    axis = int(a.get("axis", -1)) % len(xs)
    if axis == 0:
        raise unsupported(node, "along the batch axis is not supported")
    return {x: scatter_back(b, grads[0], b.fwd(node.output[1]), xs, axis)}


@register("ScatterElements", "ScatterND", values=(1,))
def _scatter(b: Builder, node, a, grads) -> dict:
    """y = data with the updates written (none), added (add), multiplied in (mul), or the largest
    or smallest of data and updates kept (max, min) at the indices."""
    data, upd = node.input[0], node.input[2]
    xs, us = shape_of(b, data), shape_of(b, upd)
    reduction = a.get("reduction", "none")
    span = whole(xs, us)
    idx = _indices(b, node, 1)
    if node.op_type == "ScatterElements":
        pos = element_map(idx, xs, int(a.get("axis", 0)) % len(xs))
    else:
        pos = copy_map(b, helper.make_node("GatherND", ["d", "i"], ["o"]), {0: numbered(xs), 1: idx})
    if reduction in ("max", "min"):
        return _scatter_extreme(b, node, grads[0], pos, xs, us, span)
    out, g = {}, grads[0]
    if carries_signal(b, data):
        if reduction == "none":  # overwritten places get no signal
            written = copy_map(b, node, {0: numbered(xs), 1: idx, 2: np.zeros(us, np.int64)})
            out[data] = b.op("Mul", [g, b.const(written != 0, "kept")], "unscatter")
        elif reduction == "add":
            out[data] = g
        else:  # y = data · Π updates: the product of the forward updates at each place
            axis = {"axis": int(a.get("axis", 0))} if node.op_type == "ScatterElements" else {}
            ones = b.const(np.ones(xs, np.float32), "ones")
            factor = b.op(node.op_type, [ones, b.ints(idx), b.fwd(upd)], "factor", reduction="mul", **axis)
            out[data] = b.op("Mul", [g, factor], "unscatter")
    if carries_signal(b, upd):
        if reduction == "mul":
            raise unsupported(node, "with reduction 'mul' and updates computed from the input is not supported")
        du = take_back(b, g, pos, xs, us, span)
        out[upd] = b.op("Add", [out[upd], du], "acc") if upd in out else du
    return out


def _scatter_extreme(b: Builder, node, g: str, pos: np.ndarray, xs, us, span: bool) -> dict:
    """max/min: the signal of each place goes to the data and updates equal to its result, split
    evenly between ties (torch's rule for Max, Min and scatter_reduce), read off the forward run."""
    data, upd = node.input[0], node.input[2]
    at = b.ints(pos.reshape(-1) - 1)
    y = _flat(b, b.fwd(node.output[0]), xs, span, "y")
    tie_d = b.op("Cast", [b.op("Equal", [_flat(b, b.fwd(data), xs, span, "d"), y])], "tie_data", to=TensorProto.FLOAT)
    tie_u = b.op("Cast", [b.op("Equal", [_flat(b, b.fwd(upd), us, span, "u"), b.op("Gather", [y, at], "y_at", axis=1)])],
                 "tie_updates", to=TensorProto.FLOAT)
    at_rows = b.op("Expand", [b.op("Unsqueeze", [at, b.ints([0])]), b.op("Shape", [tie_u])], "at_rows")
    count = b.op("ScatterElements", [tie_d, at_rows, tie_u], "ties", axis=1, reduction="add")
    share = b.op("Div", [_flat(b, g, xs, span, "g"), count], "share")
    out = {}
    if carries_signal(b, data):
        out[data] = _unflat(b, b.op("Mul", [share, tie_d], "to_data"), xs, span, "unscatter")
    if carries_signal(b, upd):
        du = _unflat(b, b.op("Mul", [b.op("Gather", [share, at], "share_at", axis=1), tie_u], "to_updates"), us, span, "updates")
        out[upd] = b.op("Add", [out[upd], du], "acc") if upd in out else du
    return out
