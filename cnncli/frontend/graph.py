"""The analysed graph: tensor shapes (ONNX shape inference), constants and weight sources.

``analyse`` turns a loaded ``ModelProto`` into a :class:`Graph` that the cost rules, the
receptive-field walk and the reverse-graph builder all read. It never prints.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from cnncli.errors import BadArgument, CnnError, ModelError
from cnncli.frontend.damage import explain_if_damaged
from cnncli.frontend.fold import FOLD_CAP, tensor_value
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


class NodeInfo(NamedTuple):
    """A node's fields as plain Python values, read once from the protobuf (every later walk
    over the graph reads these: reading a protobuf field costs far more than a tuple item)."""

    op: str
    domain: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    name: str


def node_table(nodes) -> list[NodeInfo]:
    return [NodeInfo(n.op_type, n.domain, tuple(n.input), tuple(n.output), n.name) for n in nodes]


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str


class ConstRef:
    """A tensor whose value is fixed by the model: an initializer, or produced from one.

    ``source``: the stored tensor it comes from (what params are counted by); ``numel`` and
    ``elem_type``: its size and storage type. ``value``: the numpy value when the tensor is
    small (at most ``FOLD_CAP`` elements, any dtype) and held in the model file, including every
    value constant folding worked out; None for weights (never read in) and external data.
    """

    __slots__ = ("source", "numel", "elem_type", "_value", "_tensor")

    def __init__(self, source: str, numel: int | None, elem_type: int, value: np.ndarray | None = None,
                 tensor: TensorProto | None = None):
        self.source = source
        self.numel = numel
        self.elem_type = elem_type
        self._value = value
        self._tensor = tensor  # decoded on first use of .value (most never are)

    @property
    def value(self) -> np.ndarray | None:
        if self._value is None and self._tensor is not None:
            self._value = tensor_value(self._tensor)
            self._tensor = None
        return self._value

    def with_value(self, value: np.ndarray) -> "ConstRef":
        return ConstRef(self.source, self.numel, self.elem_type, value)

    def __repr__(self) -> str:
        return f"ConstRef({self.source!r}, numel={self.numel}, elem_type={self.elem_type})"


@dataclass
class Graph:
    model: onnx.ModelProto
    inputs: list[InputSpec]
    shapes: dict[str, Shape]
    types: dict[str, int]
    consts: dict[str, ConstRef]
    nodes: list[onnx.NodeProto] = field(default_factory=list)  # every node, folded ones included
    # the nodes constant folding replaced by values: each one's name (when it has one) and its
    # output names
    folded: set[str] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)  # for the user (the CLI prints them)
    unresolved: str | None = None  # the first tensor whose shape stays unknown, if any
    info: list[NodeInfo] = field(default_factory=list)  # node_table(nodes), aligned with nodes

    def __post_init__(self):
        if len(self.info) != len(self.nodes):
            self.info = node_table(self.nodes)

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
    src = model.graph
    light = onnx.ModelProto()
    # IR 4 on: an initializer need not be a graph input (folded values are added as initializers)
    light.ir_version = max(model.ir_version, 4)
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    g = light.graph
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
    for st in src.sparse_initializer:  # onnx's inference takes the values' 1-D shape: give it the dense one
        g.initializer.add(name=st.values.name, dims=st.dims, data_type=st.values.data_type)
    return light


def _fix_inputs(light: onnx.ModelProto, batch: int, input_shapes: dict[str, tuple[int, ...]]) -> tuple[list[InputSpec], bool]:
    """Set every input's shape; also says whether ``batch`` filled a symbolic leading dim."""
    if batch < 1:
        raise BadArgument("--batch", f"must be at least 1, not {batch}")
    inputs = real_inputs(light.graph)
    names = [i.name for i in inputs]
    for name in input_shapes:
        if name not in names:
            raise BadArgument("--input-shape", f"the model has no input '{name}' (inputs: {', '.join(names)})")
    specs = []
    filled = False
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
                    filled = True
                    continue
                raise CnnError(
                    f"input '{inp.name}' dim {i}{label} is unknown: set it with "
                    f"--input-shape {inp.name}=" + "x".join(
                        str(x.dim_value) if x.HasField("dim_value") and x.dim_value > 0 else ("1" if j == 0 else "N")
                        for j, x in enumerate(tt.shape.dim)
                    )
                )
        specs.append(InputSpec(inp.name, tuple(d.dim_value for d in tt.shape.dim), dtype_name(tt.elem_type)))
    return specs, filled


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
            # dim_value reads 0 when unset: only then is HasField worth asking
            shapes[name] = (
                tuple([v if (v := d.dim_value) or d.HasField("dim_value") else None for d in tt.shape.dim])
                if tt.HasField("shape")
                else None
            )
            types[name] = tt.elem_type
    # initializers: their shapes and types are set once, from the model (_find_consts)


def _fill(shapes: dict, extra: dict) -> list[str]:
    """Fill the dims shape inference left unknown from another source (same rank only).
    Returns the names that became fully known."""
    filled = []
    for name, new in extra.items():
        old = shapes.get(name)
        if old is None:
            merged = new
        elif None in old and len(old) == len(new):
            merged = tuple(a if a is not None else b for a, b in zip(old, new))
        else:
            continue
        shapes[name] = merged
        if None not in merged:
            filled.append(name)
    return filled


def _first_unknown(shapes: dict, info: list[NodeInfo], used: set[str] | None = None) -> str | None:
    """The first node output, in graph order, whose shape is not fully known (among ``used``:
    an output nothing reads, such as Dropout's mask, does not count)."""
    for node in info:
        for out in node.outputs:
            if out and (used is None or out in used):
                s = shapes.get(out)
                if s is None or None in s:
                    return out
    return None


def _used(model: onnx.ModelProto, info: list[NodeInfo]) -> set[str]:
    used = {o.name for o in model.graph.output}
    for node in info:
        used.update(node.inputs)
    return used


def _declared_shapes(model: onnx.ModelProto, inputs: list[InputSpec]) -> dict[str, Shape]:
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


def _find_consts(graph: onnx.GraphProto, shapes: dict, types: dict, info: list[NodeInfo]) -> dict[str, ConstRef]:
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


def _take_values(new: dict, consts: dict, shapes: dict, types: dict) -> list[TensorProto]:
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


_POOLS = ("MaxPool", "AveragePool", "LpPool")


def _ceil_pool_fixes(nodes, info: list[NodeInfo], shapes: dict) -> dict[str, tuple]:
    """Pool outputs whose ceil_mode size ONNX shape inference overstates.

    With ceil_mode, a last window that would start in the end padding is dropped by onnxruntime
    and by ONNX's reference implementation (and PyTorch), but onnx's shape inference keeps it.
    """
    fixes = {}
    for node, ni in zip(nodes, info):
        if ni.op not in _POOLS or not ni.outputs:
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
        if min((*s, *d, *k), default=1) < 1 or len(s) != r or len(d) != r or len(pads) != 2 * r:
            continue  # damaged: window() says so
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
    """Fix the input shapes, fold what is constant and infer every tensor's shape.

    In rounds, cheapest first: ONNX shape inference; constant folding (its values go back into
    the inference as initializers); inference with data propagation; then, for what is still
    unknown, onnxruntime's symbolic shape inference and the graph's declared value_info.
    """
    with gc_paused():  # tens of thousands of small objects, none freed: see gc_paused
        return _analyse(model, batch, input_shapes)


def _analyse(model: onnx.ModelProto, batch: int, input_shapes: dict[str, tuple[int, ...]] | None) -> Graph:
    from cnncli.frontend.fold import fold
    from cnncli.frontend.inputs import batch_warning, check_conv_channels, check_ranks

    input_shapes = dict(input_shapes or {})
    light = _light_copy(model)
    check_ranks(light.graph, input_shapes)
    inputs, batch_filled = _fix_inputs(light, batch, input_shapes)
    nodes = list(model.graph.node)
    info = node_table(nodes)
    shapes: dict[str, Shape | None] = {}
    types: dict[str, int] = {}
    extra: dict[str, Shape] = {}  # shapes from the fallbacks: symbolic inference, declared value_info
    data_prop = False  # infer() reads this and ``extra`` as they are when it runs

    def infer() -> None:
        _collect(_infer(light, data_prop), shapes, types)
        if extra:
            _fill(shapes, extra)

    infer()
    consts = _find_consts(model.graph, shapes, types, info)

    def value_of(name: str):
        ref = consts.get(name)
        return None if ref is None else ref.value

    done: set[int] = set()  # indices of folded nodes
    dropped: set[int] = set()  # of those, the ones already taken out of the light copy
    fell_back = False
    used: set[str] = set()
    unresolved = None
    for _ in range(len(nodes) + 4):
        new = fold(nodes, info, value_of, shapes, done)
        inits = _take_values(new, consts, shapes, types) if new else []
        if inits:
            light.graph.initializer.extend(inits)
        unresolved = _first_unknown(shapes, info)
        if unresolved is None:
            break
        used = used or _used(model, info)
        unresolved = _first_unknown(shapes, info, used)
        if unresolved is None:
            break
        if done - dropped:  # the folded nodes' outputs are initializers now
            keep = [n for i, n in enumerate(nodes) if i not in done]
            del light.graph.node[:]
            light.graph.node.extend(keep)
            dropped = set(done)
        if new:
            infer()
        elif not data_prop:
            data_prop = True
            infer()
        elif not fell_back:
            from cnncli.frontend.symbolic import symbolic_shapes

            fell_back = True
            extra = {**_declared_shapes(model, inputs), **symbolic_shapes(light)}
            filled = _fill(shapes, extra)
            if not filled:
                break
            for name in filled:  # what ONNX could not infer, given to it for the ops that follow
                light.graph.value_info.append(
                    onnx.helper.make_tensor_value_info(name, types.get(name) or TensorProto.FLOAT, list(shapes[name]))
                )
            infer()
        else:
            break
    for _ in range(8):  # each round fixes the first pools; later ones may follow from them
        fixes = _ceil_pool_fixes(nodes, info, shapes)
        if not fixes:
            break
        for name, shape in fixes.items():
            light.graph.value_info.append(onnx.helper.make_tensor_value_info(name, types.get(name, 1), list(shape)))
        infer()
        unresolved = _first_unknown(shapes, info, used or _used(model, info))
    if unresolved is not None:  # a shape that stays unknown may be a damaged file's doing
        explain_if_damaged(model)
    for spec in inputs:
        shapes[spec.name] = spec.shape
    from cnncli.frontend.wellformed import check_shapes

    check_shapes(shapes, "--input-shape" if input_shapes else "--batch" if batch_filled else None)
    for ni in info:  # a ConstantOfShape weight whose size only inference knew
        if ni.op == "ConstantOfShape" and ni.outputs and ni.outputs[0] in consts:
            ref = consts[ni.outputs[0]]
            if ref.numel is None:
                consts[ni.outputs[0]] = ConstRef(ref.source, numel(shapes.get(ni.outputs[0])), ref.elem_type)
    if input_shapes:  # a model's own shapes are its exporter's business; a user's are checked
        check_conv_channels(nodes, info, shapes, attrs, input_shapes)
    folded: set[str] = set()
    for i in done:
        ni = info[i]
        if ni.name:
            folded.add(ni.name)
        folded.update(o for o in ni.outputs if o)
    warnings = [w for w in [batch_warning(batch, batch_filled, inputs, input_shapes)] if w]
    return Graph(
        model=model, inputs=inputs, shapes=shapes, types=types, consts=consts, nodes=nodes,
        folded=folded, warnings=warnings, unresolved=unresolved, info=info,
    )
