"""Shape and routing ops: reshapes, transposes, concat/split, slice/pad, casts."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from cnncli.frontend.graph import FLOAT_TYPES
from cnncli.reverse.builder import Builder, carries_signal, shape_of, unsupported
from cnncli.reverse.rules import register


@register("Identity")
def _identity(b: Builder, node, a, grads) -> dict:
    return {node.input[0]: grads[0]}


@register("Dropout", values=(1, 2))
def _dropout(b: Builder, node, a, grads) -> dict:
    """Inference, or a ratio of 0: the identity. In training mode (its training_mode input true)
    with a ratio above 0 it masks at random, which no reverse pass can repeat: refused."""
    if len(node.input) > 2 and node.input[2]:
        training = b.value(node.input[2])
        ratio = b.value(node.input[1]) if node.input[1] else np.asarray(0.5)
        if (training is None or bool(np.asarray(training).any())) and (ratio is None or float(np.asarray(ratio)) != 0):
            raise unsupported(node, "in training mode (a random mask) is not supported")
    return {node.input[0]: grads[0]}


@register("Cast")
def _cast(b: Builder, node, a, grads) -> dict:
    """Passes the signal; an integer source carries it only as quantized codes (straight
    through: ConvInteger's int32 output cast to float, in a dynamically quantized model)."""
    src = b.graph.types.get(node.input[0], TensorProto.FLOAT)
    if src != TensorProto.FLOAT and src in FLOAT_TYPES:
        raise unsupported(node, "from a non-float32 tensor is not supported")
    return {node.input[0]: grads[0]}


@register("Flatten", "Reshape", "Squeeze", "Unsqueeze")
def _reshape_back(b: Builder, node, a, grads) -> dict:
    return {node.input[0]: b.reshape(grads[0], shape_of(b, node.input[0]))}


@register("Transpose")
def _transpose(b: Builder, node, a, grads) -> dict:
    perm = a.get("perm") or list(reversed(range(len(shape_of(b, node.input[0])))))
    inverse = [0] * len(perm)
    for i, p in enumerate(perm):
        inverse[p] = i
    return {node.input[0]: b.op("Transpose", [grads[0]], "T", perm=inverse)}


@register("Concat")
def _concat(b: Builder, node, a, grads) -> dict:
    axis = int(a["axis"])
    shapes = [shape_of(b, i) for i in node.input]
    axis %= len(shapes[0])
    sizes = [s[axis] for s in shapes]
    parts = [b.fresh("split") for _ in node.input]
    b.nodes.append(helper.make_node("Split", [grads[0], b.ints(sizes)], parts, name=parts[0] + "_n", axis=axis))
    out = {}
    for name, part in zip(node.input, parts):
        if carries_signal(b, name):
            out[name] = b.op("Add", [out[name], part], "acc") if name in out else part
    return out


@register("Split")
def _split(b: Builder, node, a, grads) -> dict:
    axis = int(a.get("axis", 0)) % len(shape_of(b, node.input[0]))
    pieces = []
    for out_name, g in zip(node.output, grads):
        if g is None and axis == 0:  # split along the batch axis: one signal per output, its zeros whole
            g = b.const(np.zeros(shape_of(b, out_name), np.float32), "zeros")
        pieces.append(g if g is not None else b.zeros_like_batch(_first(grads), shape_of(b, out_name)))
    return {node.input[0]: b.op("Concat", pieces, "unsplit", axis=axis)}


def _first(grads):
    return next(g for g in grads if g is not None)


@register("Slice", values=(1, 2, 3, 4))
def _slice(b: Builder, node, a, grads) -> dict:
    x = node.input[0]
    xs, ys = shape_of(b, x), shape_of(b, node.output[0])
    # the end of each slice follows from the output shape; only starts, axes and steps matter
    if "starts" in a:
        starts = a["starts"]
        axes, steps = a.get("axes", list(range(len(starts)))), [1] * len(starts)
    else:
        vals = [b.value(n) for n in list(node.input[1:]) + [""] * 4]
        if vals[0] is None or vals[1] is None:
            raise unsupported(node, "with starts/ends that could not be computed is not supported")
        starts = [int(v) for v in vals[0]]
        axes = [int(v) for v in vals[2]] if vals[2] is not None else list(range(len(starts)))
        steps = [int(v) for v in vals[3]] if vals[3] is not None else [1] * len(starts)
    if any(s != 1 for s in steps):
        return {x: _strided_unslice(b, node, grads[0], xs, ys, starts, axes, steps)}
    pads = [0] * (2 * len(xs))
    for st, ax in zip(starts, axes):
        ax %= len(xs)
        n = xs[ax]
        begin = min(max(st + n if st < 0 else st, 0), n)
        pads[ax] = begin
        pads[len(xs) + ax] = n - begin - ys[ax]
    # a slice of the batch axis: one signal shaped as the output (batch 1: the whole row or none)
    return {x: b.op("Pad", [grads[0], b.ints(pads)], "unslice")}


def _strided_unslice(b: Builder, node, g: str, xs, ys, starts, axes, steps) -> str:
    """Slice with steps (x[..., ::2], a flip): each sliced axis scattered back in turn."""
    cur = list(ys)
    for st, ax, step in zip(starts, axes, steps):
        ax %= len(xs)
        n = xs[ax]
        if step > 0:
            first = min(max(st + n if st < 0 else st, 0), n)
        else:
            first = min(max(st + n if st < 0 else st, 0), n - 1)
        index = first + step * np.arange(ys[ax], dtype=np.int64)  # the output length fixes the end
        cur[ax] = n
        g = scatter_along(b, g, cur, ax, index) if ax else scatter_first(b, g, cur, index)
    return g


@register("Pad", values=(1, 3))
def _pad(b: Builder, node, a, grads) -> dict:
    x = node.input[0]
    xs = shape_of(b, x)
    mode = a.get("mode", "constant")
    if len(node.input) > 2 and carries_signal(b, node.input[2]):
        raise unsupported(node, "with a pad value computed from the input is not supported")
    r = len(xs)
    if "pads" in a or "paddings" in a:  # Pad-2 and Pad-1
        pads = a.get("pads", a.get("paddings"))
    else:
        v = b.value(node.input[1])
        if v is None:
            raise unsupported(node, "with pads that could not be computed is not supported")
        pads = [int(p) for p in v.reshape(-1)]
        axes_v = b.value(node.input[3]) if len(node.input) > 3 and node.input[3] else None
        if axes_v is not None:  # opset 18: pads for the listed axes only
            axes = [int(ax) % r for ax in axes_v.reshape(-1)]
            full = [0] * (2 * r)
            for i, ax in enumerate(axes):
                full[ax], full[r + ax] = pads[i], pads[len(axes) + i]
            pads = full
        elif len(node.input) > 3 and node.input[3]:
            raise unsupported(node, "with axes that could not be computed is not supported")
    if pads[0] or pads[r] or (mode != "constant" and any(p < 0 for p in pads)):
        raise unsupported(node, "with pads on the batch axis, or negative pads in a mode other than constant, "
                                "is not supported")
    if mode != "constant":
        return {x: fold_padding(b, node, grads[0], xs, pads, mode)}
    # constant: what was added is cut off, what a negative pad cut off gets zeros back
    starts = [max(p, 0) for p in pads[1:r]]
    ends = [st + n - max(-pb, 0) - max(-pe, 0) for st, n, pb, pe in zip(starts, xs[1:], pads[1:r], pads[r + 1:])]
    g = b.op("Slice", [grads[0], b.ints(starts), b.ints(ends), b.ints(list(range(1, r)))], "unpad")
    if any(p < 0 for p in pads):
        g = b.op("Pad", [g, b.ints([max(-p, 0) for p in pads])], "uncrop")
    return {x: g}


@register("Gather", values=(1,))
def _gather(b: Builder, node, a, grads) -> dict:
    """Scatter-add the signal back to the gathered positions (an index taken twice adds twice)."""
    x = node.input[0]
    xs = shape_of(b, x)
    axis = int(a.get("axis", 0)) % len(xs)
    idx = b.value(node.input[1])
    if idx is None:
        raise unsupported(node, "with indices that could not be computed is not supported")
    flat = idx.reshape(-1).astype(np.int64)
    flat = np.where(flat < 0, flat + xs[axis], flat)
    if axis == 0:
        # the dynamo exporter's as_strided: a batch-1 tensor flattened to 1-D, then a Gather whose
        # indices keep the batch axis ([1, ...]); the reverse rows are stacked along that 1-D axis
        if len(xs) == 1 and idx.ndim >= 1 and idx.shape[0] == 1 and all(s.shape[0] == 1 for s in b.graph.inputs):
            g = b.reshape(grads[0], [1, flat.size], "gather_flat")
            return {x: b.reshape(scatter_along(b, g, [1, xs[0]], 1, flat), xs, "rows_flat")}
        if xs[0] == 1 and idx.size == 1 and idx.ndim >= 1:  # batch 1, its one row taken: the rows pass
            return {x: grads[0]}
        # rows of the batch axis gathered: one signal shaped as the output
        g = b.op("Reshape", [grads[0], b.ints([flat.size, *xs[1:]])], "gather_flat")
        return {x: scatter_first(b, g, xs, flat)}
    g = b.reshape(grads[0], [*xs[:axis], flat.size, *xs[axis + 1:]], "gather_flat")  # the indices' dims as one
    return {x: scatter_along(b, g, xs, axis, flat)}


def scatter_first(b: Builder, g: str, xs, index: np.ndarray) -> str:
    """The adjoint of taking rows ``index`` of the batch axis, for one signal ``g`` shaped as the
    output (the batch axis not free): the rows moved last, scattered along it, moved back."""
    rest = int(np.prod(xs[1:]))
    g = b.op("Transpose", [b.op("Reshape", [g, b.ints([int(index.size), rest])], "rows_first")], "T", perm=[1, 0])
    g = scatter_along(b, g, [rest, xs[0]], 1, index)
    return b.op("Reshape", [b.op("Transpose", [g], "T", perm=[1, 0]), b.ints(list(xs))], "rows_back")


def scatter_along(b: Builder, g: str, xs, axis: int, index: np.ndarray) -> str:
    """The adjoint of taking positions ``index`` along ``axis`` (not the batch axis) of a tensor
    shaped ``xs``: ``g`` (that axis of size len(index)) added into zeros at those positions."""
    r, m, n = len(xs), int(index.size), xs[axis]
    perm = list(range(r))  # the axis last: [rows, m] scattered into zeros [rows, n]
    perm[axis], perm[-1] = perm[-1], perm[axis]
    if axis != r - 1:
        g = b.op("Transpose", [g], "T", perm=perm)
    g = b.op("Reshape", [g, b.ints([-1, m])], "rows")
    idx = b.op("Expand", [b.ints(index.reshape(1, m)), b.op("Shape", [g])], "idx")
    g = b.op("ScatterElements", [b.zeros_like_batch(g, [None, n]), idx, g], "ungather", axis=1, reduction="add")
    g = b.reshape(g, [xs[p] for p in perm], "ungathered")
    return b.op("Transpose", [g], "T", perm=perm) if axis != r - 1 else g


_FOLD_MODES = ("reflect", "edge", "wrap")


def fold_padding(b: Builder, node, g: str, xs, pads, mode: str) -> str:
    """The adjoint of Pad in reflect, edge or wrap mode: along each padded axis, every output
    position copies one input position (numpy.pad's index map); the signal is added back there."""
    if mode not in _FOLD_MODES:
        raise unsupported(node, f"in mode '{mode}' is not supported")
    r = len(xs)
    cur = [xs[i] + pads[i] + pads[r + i] for i in range(r)]
    for ax in range(1, r):
        if not (pads[ax] or pads[r + ax]):
            continue
        index = np.pad(np.arange(xs[ax]), (pads[ax], pads[r + ax]), mode=mode)
        cur[ax] = xs[ax]
        g = scatter_along(b, g, cur, ax, index.astype(np.int64))
    return g
