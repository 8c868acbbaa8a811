"""The folding pass: in graph order, every node whose inputs are known values (small constants,
known shapes) gets its outputs' values from its evaluator in ``fold.EVAL``."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import onnx

from cnncli.frontend.fold import EVAL, FOLD_CAP, Shape, Value, _attrs, _Skip

SHAPE_OPS = frozenset({"Shape", "Size"})
FOLDABLE = frozenset(EVAL) | SHAPE_OPS
# arithmetic folds integers (shapes, indices) and float scalars (Clip bounds, GELU's constants),
# never a float tensor: W·g of a weight-normalised conv stays two weights and a Mul
ARITHMETIC = frozenset(
    "Add Sub Mul Div Pow Mod Max Min Sum Neg Abs Floor Ceil Round Sign Sqrt Reciprocal Exp Log "
    "Where Clip Equal Less Greater LessOrEqual GreaterOrEqual".split()
)


def _shape_value(node, shapes: dict) -> Value | None:
    shape = shapes.get(node.input[0]) if node.input else None
    if shape is None:
        return None
    if node.op_type == "Size":
        return None if None in shape else np.asarray(math.prod(shape), dtype=np.int64)
    a = {x.name: x.i for x in node.attribute}
    r = len(shape)
    start, end = a.get("start", 0), a.get("end", r)
    start = min(max(start + r if start < 0 else start, 0), r)
    end = min(max(end + r if end < 0 else end, 0), r)
    dims = shape[start:end]
    return None if None in dims else np.asarray(dims, dtype=np.int64)


def fold(
    nodes: list[onnx.NodeProto],
    info: list,
    value_of: Callable[[str], Value | None],
    shapes: dict[str, Shape | None],
    done: set[int],
) -> dict[str, Value]:
    """One pass in graph order: the values of the outputs of every node that folds now.

    ``value_of`` gives a known value (or None); ``done`` holds the indices of nodes already
    folded (updated here). Returns the new values, each at most ``FOLD_CAP`` elements.
    """
    new: dict[str, Value] = {}

    def get(name: str) -> Value | None:
        v = new.get(name)
        return v if v is not None else value_of(name)

    with np.errstate(all="ignore"):
        for i, ni in enumerate(info):  # info[i]: node i's fields (cnncli.frontend.graph.NodeInfo)
            op = ni.op
            if op not in FOLDABLE or i in done or ni.domain not in ("", "ai.onnx"):
                continue
            node = nodes[i]
            if op in SHAPE_OPS:
                v = _shape_value(node, shapes)
                if v is not None:
                    new[ni.outputs[0]] = v
                    done.add(i)
                continue
            ins = []
            for name in ni.inputs:
                if not name:
                    ins.append(None)
                    continue
                v = get(name)
                if v is None:
                    break
                ins.append(v)
            else:
                if op in ARITHMETIC and any(v is not None and v.dtype.kind in "fc" and v.size > 1 for v in ins):
                    continue
                try:
                    outs = EVAL[op](node, _attrs(node), ins)
                except (_Skip, ValueError, TypeError, IndexError, KeyError, OverflowError, ArithmeticError):
                    continue
                named = [o for o in ni.outputs if o]
                if len(outs) != len(named) or any(o.size > FOLD_CAP for o in outs):
                    continue
                for name, v in zip(named, outs):
                    new[name] = np.asarray(v)
                done.add(i)
    return new

