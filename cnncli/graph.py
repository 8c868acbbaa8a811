"""The analysed graph: tensor shapes (ONNX shape inference), constants and weight sources.

``analyse`` turns a loaded ``ModelProto`` into a :class:`Graph` that the cost rules, the
receptive-field walk and the reverse-graph builder all read. It never prints.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from cnncli.errors import BadArgument, CnnError, ModelError
from cnncli.gcpause import gc_paused

Shape = tuple  # of int | None (None: unknown dim)

FLOAT_TYPES = frozenset({TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16})
_BITS = {
    TensorProto.FLOAT: 32, TensorProto.UINT8: 8, TensorProto.INT8: 8, TensorProto.UINT16: 16,
    TensorProto.INT16: 16, TensorProto.INT32: 32, TensorProto.INT64: 64, TensorProto.BOOL: 8,
    TensorProto.FLOAT16: 16, TensorProto.DOUBLE: 64, TensorProto.UINT32: 32, TensorProto.UINT64: 64,
    TensorProto.BFLOAT16: 16, TensorProto.COMPLEX64: 64, TensorProto.COMPLEX128: 128,
}
for _name in ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "FLOAT8E8M0"):
    if hasattr(TensorProto, _name):
        _BITS[getattr(TensorProto, _name)] = 8
for _name in ("UINT4", "INT4", "FLOAT4E2M1"):
    if hasattr(TensorProto, _name):
        _BITS[getattr(TensorProto, _name)] = 4
# quantized weights are still weights when a DequantizeLinear turns them into floats
WEIGHT_STORAGE_TYPES = FLOAT_TYPES | {TensorProto.INT8, TensorProto.UINT8, TensorProto.INT4 if hasattr(TensorProto, "INT4") else -1}

# ops whose output is a weight when their first input is one (a weight seen through a cast or reshape)
PASSTHROUGH_CONST_OPS = frozenset(
    {"Identity", "Cast", "DequantizeLinear", "Reshape", "Unsqueeze", "Squeeze", "Transpose", "Flatten"}
)
# float initializers up to this many elements keep their data for shape inference
_SMALL_TENSOR = 64


def dtype_name(elem_type: int) -> str:
    if elem_type == TensorProto.FLOAT:
        return "float32"
    if elem_type == TensorProto.DOUBLE:
        return "float64"
    try:
        return TensorProto.DataType.Name(elem_type).lower()
    except ValueError:
        return f"type{elem_type}"


def nbytes(numel: int, elem_type: int) -> int:
    return (numel * _BITS.get(elem_type, 32) + 7) // 8


def numel(shape: Shape | None) -> int | None:
    if shape is None or None in shape:  # dims are ints or None
        return None
    return math.prod(shape)


def attrs(node: onnx.NodeProto) -> dict:
    """A node's attributes as plain Python values (faster than onnx.helper for big graphs)."""
    out = {}
    for a in node.attribute:
        t = a.type
        if t == onnx.AttributeProto.INT:
            out[a.name] = a.i
        elif t == onnx.AttributeProto.INTS:
            out[a.name] = list(a.ints)
        elif t == onnx.AttributeProto.FLOAT:
            out[a.name] = a.f
        elif t == onnx.AttributeProto.FLOATS:
            out[a.name] = list(a.floats)
        elif t == onnx.AttributeProto.STRING:
            out[a.name] = a.s.decode("utf-8", "replace")
        elif t == onnx.AttributeProto.TENSOR:
            out[a.name] = a.t
        elif t == onnx.AttributeProto.GRAPH:
            out[a.name] = a.g
        else:
            out[a.name] = onnx.helper.get_attribute_value(a)
    return out


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class ConstRef:
    """A tensor whose value is fixed by the model: an initializer, or produced from one."""

    source: str  # the stored tensor it comes from (what params are counted by)
    numel: int | None
    elem_type: int  # storage type of the source
    value: np.ndarray | None = None  # known only for small integer tensors (shapes, axes)


@dataclass
class Graph:
    model: onnx.ModelProto
    inputs: list[InputSpec]
    shapes: dict[str, Shape]
    types: dict[str, int]
    consts: dict[str, ConstRef]
    nodes: list[onnx.NodeProto] = field(default_factory=list)

    def shape(self, name: str) -> Shape | None:
        return self.shapes.get(name)

    def is_const(self, name: str) -> bool:
        return name in self.consts


def parse_shape_text(text: str) -> tuple[int, ...]:
    """'1x3x224x224' -> (1, 3, 224, 224)."""
    parts = re.split(r"[x,×]", text.strip().lower())
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise BadArgument("--input-shape", f"'{text}' is not a shape like 1x3x224x224") from None
    if not dims or any(d < 1 for d in dims):
        raise BadArgument("--input-shape", f"'{text}': every dim must be a positive integer")
    return dims


def real_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    inits = {t.name for t in graph.initializer}
    return [i for i in graph.input if i.name not in inits]


def _shape_of(value_info: onnx.ValueInfoProto) -> Shape | None:
    tt = value_info.type.tensor_type
    if not tt.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)


def _light_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model without large weight payloads, for shape inference (shapes only need dims)."""
    light = onnx.ModelProto()
    light.ir_version = model.ir_version
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    g = light.graph
    src = model.graph
    g.name = src.name
    g.node.extend(src.node)
    g.input.extend(src.input)
    for out in src.output:
        o = g.output.add()
        o.name = out.name
        if out.type.HasField("tensor_type"):
            o.type.tensor_type.elem_type = out.type.tensor_type.elem_type
    for t in src.initializer:
        if math.prod(t.dims) <= _SMALL_TENSOR and t.data_location != TensorProto.EXTERNAL:
            g.initializer.append(t)
        else:
            g.initializer.add(name=t.name, dims=t.dims, data_type=t.data_type)
    g.sparse_initializer.extend(src.sparse_initializer)
    return light


def _fix_inputs(light: onnx.ModelProto, batch: int, input_shapes: dict[str, tuple[int, ...]]) -> list[InputSpec]:
    if batch < 1:
        raise BadArgument("--batch", f"must be at least 1, not {batch}")
    inputs = real_inputs(light.graph)
    names = [i.name for i in inputs]
    for name in input_shapes:
        if name not in names:
            raise BadArgument("--input-shape", f"the model has no input '{name}' (inputs: {', '.join(names)})")
    specs = []
    for inp in inputs:
        tt = inp.type.tensor_type
        if name_shape := input_shapes.get(inp.name):
            tt.ClearField("shape")
            for d in name_shape:
                tt.shape.dim.add(dim_value=d)
        elif not tt.HasField("shape"):
            raise CnnError(f"input '{inp.name}' has no shape: give it with --input-shape {inp.name}=1x3x224x224")
        else:
            for i, d in enumerate(tt.shape.dim):
                if d.HasField("dim_value") and d.dim_value > 0:
                    continue
                label = f" ('{d.dim_param}')" if d.dim_param else ""
                if i == 0:
                    d.Clear()
                    d.dim_value = batch
                    continue
                raise CnnError(
                    f"input '{inp.name}' dim {i}{label} is unknown: set it with "
                    f"--input-shape {inp.name}=" + "x".join(
                        str(x.dim_value) if x.HasField("dim_value") and x.dim_value > 0 else ("1" if j == 0 else "N")
                        for j, x in enumerate(tt.shape.dim)
                    )
                )
        specs.append(InputSpec(inp.name, tuple(d.dim_value for d in tt.shape.dim), dtype_name(tt.elem_type)))
    return specs


def _infer(light: onnx.ModelProto, data_prop: bool) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(light, strict_mode=False, data_prop=data_prop)
    except Exception as exc:  # onnx raises InferenceError, ValidationError or RuntimeError
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"shape inference failed: {msg}") from None


def _collect(inferred: onnx.ModelProto, shapes: dict, types: dict) -> None:
    g = inferred.graph
    for vi in (*g.input, *g.value_info, *g.output):
        typ = vi.type
        if typ.HasField("tensor_type"):  # _shape_of, inlined: this runs once per tensor
            tt = typ.tensor_type
            name = vi.name
            shapes[name] = (
                tuple([d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim])
                if tt.HasField("shape")
                else None
            )
            types[name] = tt.elem_type
    for t in g.initializer:
        shapes[t.name] = tuple(t.dims)
        types[t.name] = t.data_type


def _complete(shapes: dict, nodes) -> bool:
    for node in nodes:
        for out in node.output:
            if out and (shapes.get(out) is None or None in shapes[out]):
                return False
    return True


def _const_value(tensor: TensorProto) -> np.ndarray | None:
    if tensor.data_type in FLOAT_TYPES or math.prod(tensor.dims) > _SMALL_TENSOR:
        return None
    if tensor.data_location == TensorProto.EXTERNAL:
        return None
    try:
        return numpy_helper.to_array(tensor)
    except Exception:
        return None


def _find_consts(graph: onnx.GraphProto, shapes: dict) -> dict[str, ConstRef]:
    consts: dict[str, ConstRef] = {}
    for t in graph.initializer:
        consts[t.name] = ConstRef(t.name, math.prod(t.dims), t.data_type, _const_value(t))
    for st in graph.sparse_initializer:
        consts[st.values.name] = ConstRef(st.values.name, math.prod(st.dims), st.values.data_type)
    for node in graph.node:
        op = node.op_type
        if node.domain not in ("", "ai.onnx"):
            continue
        if op == "Constant":
            a = attrs(node)
            if "value" in a:
                t = a["value"]
                ref = ConstRef(node.output[0], math.prod(t.dims), t.data_type, _const_value(t))
            elif "value_float" in a or "value_floats" in a:
                v = np.asarray(a.get("value_float", a.get("value_floats")), dtype=np.float32)
                ref = ConstRef(node.output[0], int(v.size), TensorProto.FLOAT)
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


_POOLS = ("MaxPool", "AveragePool", "LpPool")


def _ceil_pool_fixes(nodes, shapes: dict) -> dict[str, tuple]:
    """Pool outputs whose ceil_mode size ONNX shape inference overstates.

    With ceil_mode, a last window that would start in the end padding is dropped by onnxruntime
    and by ONNX's reference implementation (and PyTorch), but onnx's shape inference keeps it.
    """
    fixes = {}
    for node in nodes:
        if node.op_type not in _POOLS or not node.output:
            continue
        a = attrs(node)
        if not a.get("ceil_mode") or a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            continue
        x, y = shapes.get(node.input[0]), shapes.get(node.output[0])
        k = a.get("kernel_shape", [])
        if x is None or y is None or None in x or None in y or len(y) != len(x) or not k:
            continue
        r = len(k)
        s, d = a.get("strides", [1] * r), a.get("dilations", [1] * r)
        pads = a.get("pads", [0] * 2 * r) if a.get("auto_pad", "NOTSET") == "NOTSET" else [0] * 2 * r
        fixed = list(y)
        for i in range(r):
            n, pb, pe = x[2 + i], pads[i], pads[r + i]
            out = -(-(n + pb + pe - ((k[i] - 1) * d[i] + 1)) // s[i]) + 1
            if (out - 1) * s[i] >= n + pb:
                out -= 1
            fixed[2 + i] = out
        if tuple(fixed) != tuple(y):
            fixes[node.output[0]] = tuple(fixed)
    return fixes


def analyse(
    model: onnx.ModelProto,
    batch: int = 1,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
) -> Graph:
    """Fix the input shapes, run ONNX shape inference and find the graph's constants.

    Plain inference runs first; data propagation (slower) only when some shape stays unknown.
    """
    with gc_paused():  # tens of thousands of small objects, none freed: see gc_paused
        return _analyse(model, batch, input_shapes)


def _analyse(model: onnx.ModelProto, batch: int, input_shapes: dict[str, tuple[int, ...]] | None) -> Graph:
    light = _light_copy(model)
    inputs = _fix_inputs(light, batch, dict(input_shapes or {}))
    shapes: dict[str, Shape | None] = {}
    types: dict[str, int] = {}
    data_prop = False
    inferred = _infer(light, data_prop=False)
    _collect(inferred, shapes, types)
    if not _complete(shapes, light.graph.node):
        data_prop = True
        inferred = _infer(light, data_prop=True)
        _collect(inferred, shapes, types)
    for _ in range(8):  # each round fixes the first pools; later ones may follow from them
        fixes = _ceil_pool_fixes(light.graph.node, shapes)
        if not fixes:
            break
        for name, shape in fixes.items():
            light.graph.value_info.append(onnx.helper.make_tensor_value_info(name, types.get(name, 1), list(shape)))
        inferred = _infer(light, data_prop=data_prop)
        _collect(inferred, shapes, types)
    for spec in inputs:
        shapes[spec.name] = spec.shape
    consts = _find_consts(model.graph, shapes)
    return Graph(model=model, inputs=inputs, shapes=shapes, types=types, consts=consts, nodes=list(model.graph.node))
