"""The model's constants as the analysis finds them: initializers, Constant nodes and what
passes a weight through (a cast, a reshape), the values constant folding works out, and the
shapes the graph itself declares."""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from cnncli.frontend.graph_types import PASSTHROUGH_CONST_OPS, ConstRef, InputSpec, NodeInfo, Shape, attrs, numel


def declared_shapes(model: onnx.ModelProto, inputs: list[InputSpec]) -> dict[str, Shape]:
    """The graph's own value_info shapes, where they hold for the input shapes being analysed:
    symbolic dims named on an input take that input's value; a fixed input dim that differs from
    the one being analysed makes them all unusable."""
    symbols: dict[str, int] = {}
    specs = {s.name: s for s in inputs}
    for vi in model.graph.input:
        spec = specs.get(vi.name)
        if spec is None or not vi.type.tensor_type.HasField("shape"):
            continue
        dims = vi.type.tensor_type.shape.dim
        if len(dims) != len(spec.shape):
            return {}
        for d, v in zip(dims, spec.shape):
            if d.HasField("dim_value") and d.dim_value > 0 and d.dim_value != v:
                return {}
            if d.dim_param:
                symbols[d.dim_param] = v
    out = {}
    for vi in (*model.graph.value_info, *model.graph.output):
        tt = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and tt.HasField("shape"):
            out[vi.name] = tuple(
                d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else symbols.get(d.dim_param) for d in tt.shape.dim
            )
    return out


_CONST_OPS = PASSTHROUGH_CONST_OPS | {"Constant", "ConstantOfShape"}


def find_consts(graph: onnx.GraphProto, shapes: dict, types: dict, info: list[NodeInfo]) -> dict[str, ConstRef]:
    """The model's constants; also records the initializers' shapes and types."""
    consts: dict[str, ConstRef] = {}
    for t in graph.initializer:
        name, dims, elem = t.name, tuple(t.dims), t.data_type
        consts[name] = ConstRef(name, math.prod(dims), elem, tensor=t)
        shapes[name] = dims
        types[name] = elem
    for st in graph.sparse_initializer:  # params: the values it stores; its shape: the dense one
        stored = st.values.dims[0] if len(st.values.dims) == 1 else None
        consts[st.values.name] = ConstRef(st.values.name, stored, st.values.data_type)
        shapes[st.values.name] = tuple(st.dims)
        types[st.values.name] = st.values.data_type
    for node, ni in zip(graph.node, info):
        op = ni.op
        if op not in _CONST_OPS or ni.domain not in ("", "ai.onnx"):
            continue
        if op == "Constant":
            a = attrs(node)
            if "value" in a:
                t = a["value"]
                ref = ConstRef(node.output[0], math.prod(t.dims), t.data_type, tensor=t)
            elif "value_float" in a or "value_floats" in a:
                v = np.asarray(a.get("value_float", a.get("value_floats")), dtype=np.float32)
                ref = ConstRef(node.output[0], int(v.size), TensorProto.FLOAT, v)
            elif "value_int" in a or "value_ints" in a:
                v = np.asarray(a.get("value_int", a.get("value_ints")), dtype=np.int64)
                ref = ConstRef(node.output[0], int(v.size), TensorProto.INT64, v)
            elif "sparse_value" in a:
                sv = a["sparse_value"]
                ref = ConstRef(node.output[0], math.prod(sv.dims), sv.values.data_type)
            else:
                continue
            consts[node.output[0]] = ref
        elif op == "ConstantOfShape" and node.input and node.input[0] in consts:
            shape_ref = consts[node.input[0]]
            a = attrs(node)
            elem = a["value"].data_type if "value" in a else TensorProto.FLOAT
            if shape_ref.value is not None:
                n = int(np.prod(shape_ref.value))
            else:
                n = numel(shapes.get(node.output[0]))
            consts[node.output[0]] = ConstRef(node.output[0], n, elem)
        elif op in PASSTHROUGH_CONST_OPS and node.input and node.input[0] in consts:
            src = consts[node.input[0]]
            consts[node.output[0]] = ConstRef(src.source, src.numel, src.elem_type)
    return consts


def _np_for(elem_type: int | None):
    try:
        return onnx.helper.tensor_dtype_to_np_dtype(elem_type) if elem_type else None
    except Exception:
        return None


def take_values(new: dict, consts: dict, shapes: dict, types: dict) -> list[TensorProto]:
    """Record folded values as constants; return them as initializers for the light copy."""
    tensors = []
    for name, v in new.items():
        want = _np_for(types.get(name))
        try:
            if want is not None and v.dtype != want:
                v = v.astype(want)
            elem = onnx.helper.np_dtype_to_tensor_dtype(v.dtype)
        except Exception:  # a type numpy cannot hold as such: leave this value out
            continue
        ref = consts.get(name)
        consts[name] = ref.with_value(v) if ref is not None else ConstRef(name, int(v.size), elem, v)
        shapes[name] = tuple(v.shape)
        types[name] = elem
        try:
            tensors.append(numpy_helper.from_array(v, name))
        except Exception:
            continue
    return tensors
