"""Constant folding: evaluate, with numpy, every node whose inputs are known values.

Known values are small constants (initializers and Constant nodes up to ``FOLD_CAP`` elements)
and the shapes of tensors whose shape is known (Shape, Size). What exporters compute from them
(TorchScript's ``chunk`` sizes, TF-style "same" pads, Clip bounds cast from a Constant) becomes
a constant too, so shape inference resolves what follows and the cost rules and reverse builder
see plain values. Nothing larger than ``FOLD_CAP`` elements is ever built: weights stay where
they are (and may not even be in memory: external data). This module holds the evaluators, one
per op (``EVAL``); ``folding.py`` the pass that runs them over a graph.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from cnncli.registry import Registry

FOLD_CAP = 4096  # elements: the largest value folding reads or makes

Value = np.ndarray
Shape = tuple


def _np_dtype(elem_type: int):
    if elem_type in (TensorProto.BFLOAT16, TensorProto.STRING, TensorProto.UNDEFINED) or elem_type >= 17:
        return None  # bfloat16, float8, int4: no plain numpy type
    try:
        return onnx.helper.tensor_dtype_to_np_dtype(elem_type)
    except Exception:
        return None


def tensor_value(t: TensorProto) -> Value | None:
    """The numpy value of a small tensor held in the model itself (never external data)."""
    if t.data_location == TensorProto.EXTERNAL or math.prod(t.dims) > FOLD_CAP or _np_dtype(t.data_type) is None:
        return None
    try:
        return numpy_helper.to_array(t)
    except Exception:
        return None


class _Skip(Exception):
    """This node is not folded (too big, not constant, or a case the evaluator does not cover)."""


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _small(shape) -> tuple:
    shape = tuple(int(d) for d in shape)
    if any(d < 0 for d in shape) or math.prod(shape) > FOLD_CAP:
        raise _Skip
    return shape


def _bcast(*xs: Value) -> None:
    _small(np.broadcast_shapes(*(x.shape for x in xs)))


def _ints(v: Value | None) -> list[int] | None:
    return None if v is None else [int(i) for i in np.asarray(v).reshape(-1)]


def _axes(node, a: dict, ins: list, index: int) -> list[int] | None:
    """Axes from an attribute (old opsets) or an input (new ones)."""
    if "axes" in a:
        return list(a["axes"])
    if len(ins) > index and ins[index] is not None:
        return _ints(ins[index])
    return None


def _div(a: Value, b: Value) -> Value:
    _bcast(a, b)
    if a.dtype.kind in "iu":
        if np.any(b == 0):
            raise _Skip
        q = np.abs(a) // np.abs(b)  # C-style: truncate toward zero, as onnxruntime does
        return (q * np.sign(a) * np.sign(b)).astype(np.result_type(a, b))
    return np.asarray(a / b, dtype=np.result_type(a, b))


def _binary(fn: Callable) -> Callable:
    def ev(node, a, ins):
        x, y = ins
        _bcast(x, y)
        return [np.asarray(fn(x, y))]

    return ev


def _unary(fn: Callable) -> Callable:
    def ev(node, a, ins):
        return [np.asarray(fn(ins[0])).astype(ins[0].dtype, copy=False)]

    return ev


def _variadic(fn: Callable) -> Callable:
    def ev(node, a, ins):
        _bcast(*ins)
        out = ins[0]
        for x in ins[1:]:
            out = fn(out, x)
        return [np.asarray(out)]

    return ev


def _cast(node, a, ins):
    dt = _np_dtype(a["to"])
    if dt is None:
        raise _Skip
    return [ins[0].astype(dt)]


def _cast_like(node, a, ins):
    return [ins[0].astype(ins[1].dtype)]


def _constant(node, a, ins):
    if "value" in a:
        v = tensor_value(a["value"])
        if v is None:
            raise _Skip
        return [v]
    for key, dt in (("value_float", np.float32), ("value_floats", np.float32), ("value_int", np.int64), ("value_ints", np.int64)):
        if key in a:
            return [np.asarray(a[key], dtype=dt)]
    raise _Skip


def _constant_of_shape(node, a, ins):
    shape = _small(_ints(ins[0]))
    if "value" not in a:
        return [np.zeros(shape, dtype=np.float32)]
    value = tensor_value(a["value"])
    if value is None or value.size != 1:  # a value tensor it cannot read (external, damaged): not folded
        raise _Skip
    fill = value.reshape(-1)[0]
    return [np.full(shape, fill, dtype=fill.dtype)]


def _gather(node, a, ins):
    data, idx = ins
    _small(idx.shape + data.shape)
    return [np.take(data, idx.astype(np.int64), axis=a.get("axis", 0))]


def _slice(node, a, ins):
    data = ins[0]
    if "starts" in a:  # opset < 10
        starts, ends, axes, steps = a["starts"], a["ends"], a.get("axes"), None
    else:
        starts, ends = _ints(ins[1]), _ints(ins[2])
        axes = _ints(ins[3]) if len(ins) > 3 and ins[3] is not None else None
        steps = _ints(ins[4]) if len(ins) > 4 and ins[4] is not None else None
    axes = list(axes) if axes is not None else list(range(len(starts)))
    steps = steps or [1] * len(starts)
    index = [slice(None)] * data.ndim
    for s, e, ax, st in zip(starts, ends, axes, steps):
        if st == 0:
            raise _Skip
        index[ax] = slice(s, e, st)  # Python slicing clamps as ONNX does
    return [data[tuple(index)]]


def _concat(node, a, ins):
    _small((sum(x.size for x in ins),))
    return [np.concatenate([np.atleast_1d(x) if x.ndim == 0 else x for x in ins], axis=a["axis"])]


def _unsqueeze(node, a, ins):
    axes = _axes(node, a, ins, 1)
    if axes is None:
        raise _Skip
    rank = ins[0].ndim + len(axes)
    out = ins[0]
    for ax in sorted(x % rank for x in axes):
        out = np.expand_dims(out, ax)
    return [out]


def _squeeze(node, a, ins):
    axes = _axes(node, a, ins, 1)
    x = ins[0]
    if axes is None:
        return [np.squeeze(x)]
    return [np.squeeze(x, axis=tuple(ax % x.ndim for ax in axes))]


def _reshape(node, a, ins):
    x, shape = ins[0], _ints(ins[1])
    if not a.get("allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return [x.reshape(shape)]


def _flatten(node, a, ins):
    x = ins[0]
    axis = a.get("axis", 1) % (x.ndim + 1) if x.ndim else 0
    return [x.reshape(math.prod(x.shape[:axis]), -1)]


def _transpose(node, a, ins):
    return [np.transpose(ins[0], a.get("perm"))]


def _expand(node, a, ins):
    shape = _small(np.broadcast_shapes(ins[0].shape, tuple(_ints(ins[1]))))
    return [np.broadcast_to(ins[0], shape).copy()]


def _tile(node, a, ins):
    reps = _ints(ins[1])
    _small(tuple(d * r for d, r in zip(ins[0].shape, reps)))
    return [np.tile(ins[0], reps)]


def _range(node, a, ins):
    start, limit, delta = (x.reshape(-1)[0] for x in ins)
    if delta == 0:
        raise _Skip
    n = max(int(math.ceil((limit - start) / delta)), 0)
    _small((n,))
    return [np.arange(start, limit, delta, dtype=ins[0].dtype)[:n]]


def _where(node, a, ins):
    _bcast(*ins)
    return [np.where(ins[0], ins[1], ins[2])]


def _mod(node, a, ins):
    x, y = ins
    _bcast(x, y)
    if x.dtype.kind in "iu" and np.any(y == 0):
        raise _Skip
    return [np.fmod(x, y) if a.get("fmod", 0) else np.mod(x, y)]


def _clip(node, a, ins):
    lo = ins[1] if len(ins) > 1 and ins[1] is not None else a.get("min")
    hi = ins[2] if len(ins) > 2 and ins[2] is not None else a.get("max")
    return [np.clip(ins[0], lo, hi).astype(ins[0].dtype)]


def _reduce(fn: Callable) -> Callable:
    def ev(node, a, ins):
        axes = _axes(node, a, ins, 1)
        keep = bool(a.get("keepdims", 1))
        if axes is None and a.get("noop_with_empty_axes", 0):
            return [ins[0]]
        ax = None if not axes else tuple(axes)
        return [np.asarray(fn(ins[0], axis=ax, keepdims=keep)).astype(ins[0].dtype)]

    return ev


def _split(node, a, ins):
    x = ins[0]
    axis = a.get("axis", 0)
    sizes = a.get("split") or (_ints(ins[1]) if len(ins) > 1 and ins[1] is not None else None)
    n = len(node.output)
    if sizes is None:
        step = -(-x.shape[axis] // n)
        sizes = [min(step, x.shape[axis] - i * step) for i in range(n)]
    return np.split(x, np.cumsum(sizes)[:-1], axis=axis)


def _identity(node, a, ins):
    return [ins[0]]


EVAL = Registry("fold evaluator")  # op type -> evaluator(node, attrs, input values) -> output values
for _ops, _rule in (
    (("Constant",), _constant),
    (("ConstantOfShape",), _constant_of_shape),
    (("Cast",), _cast),
    (("CastLike",), _cast_like),
    (("Identity",), _identity),
    (("Gather",), _gather),
    (("Slice",), _slice),
    (("Concat",), _concat),
    (("Unsqueeze",), _unsqueeze),
    (("Squeeze",), _squeeze),
    (("Reshape",), _reshape),
    (("Flatten",), _flatten),
    (("Transpose",), _transpose),
    (("Expand",), _expand),
    (("Tile",), _tile),
    (("Range",), _range),
    (("Split",), _split),
    (("Where",), _where),
    (("Clip",), _clip),
    (("Add",), _binary(np.add)),
    (("Sub",), _binary(np.subtract)),
    (("Mul",), _binary(np.multiply)),
    (("Div",), lambda node, a, ins: [_div(*ins)]),
    (("Pow",), _binary(lambda x, y: np.power(x, y).astype(x.dtype))),
    (("Mod",), _mod),
    (("Equal",), _binary(np.equal)),
    (("Less",), _binary(np.less)),
    (("Greater",), _binary(np.greater)),
    (("LessOrEqual",), _binary(np.less_equal)),
    (("GreaterOrEqual",), _binary(np.greater_equal)),
    (("And",), _binary(np.logical_and)),
    (("Or",), _binary(np.logical_or)),
    (("Xor",), _binary(np.logical_xor)),
    (("Max",), _variadic(np.maximum)),
    (("Min",), _variadic(np.minimum)),
    (("Sum",), _variadic(np.add)),
    (("Not",), _unary(np.logical_not)),
    (("Neg",), _unary(np.negative)),
    (("Abs",), _unary(np.abs)),
    (("Floor",), _unary(np.floor)),
    (("Ceil",), _unary(np.ceil)),
    (("Round",), _unary(np.round)),
    (("Sign",), _unary(np.sign)),
    (("Sqrt",), _unary(np.sqrt)),
    (("Reciprocal",), _unary(np.reciprocal)),
    (("Exp",), _unary(np.exp)),
    (("Log",), _unary(np.log)),
    (("ReduceProd",), _reduce(np.prod)),
    (("ReduceSum",), _reduce(np.sum)),
    (("ReduceMin",), _reduce(np.min)),
    (("ReduceMax",), _reduce(np.max)),
):
    EVAL.register(*_ops)(_rule)
