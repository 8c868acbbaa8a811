"""Is a parsed model well formed enough to walk? Names are text, each attribute has the type its
op's schema declares, window attributes agree in length, initializers name a data type, every
tensor holds as much data as its dims say.

A damaged file can parse: python-protobuf hands back *bytes* for a string field that is not valid
UTF-8, and one flipped byte turns a Conv's INTS ``kernel_shape`` into FLOATS or a Constant's
tensor into a string. Left alone, these crash the walks far from their cause; here they are one
line naming the node. Unknown ops (no schema) and custom domains are not judged: costing a model
with an op cnncli does not know is a warning, not an error.
"""

from __future__ import annotations

from functools import lru_cache

import onnx
from onnx import AttributeProto, TensorProto

from cnncli.errors import ModelError

_DATA_TYPES = frozenset(TensorProto.DataType.values()) - {TensorProto.UNDEFINED}
_ATTR_TYPES = frozenset(AttributeProto.AttributeType.values()) - {AttributeProto.UNDEFINED}
# attributes giving one value per spatial axis, and how many values that is per axis
_PER_AXIS = {"kernel_shape": 1, "strides": 1, "dilations": 1, "pads": 2, "output_padding": 1}


@lru_cache(maxsize=None)
def _schema_types(op: str, domain: str, version: int) -> dict[str, int] | None:
    """attribute name -> declared AttributeType, for ops onnx knows at that opset; None otherwise."""
    try:
        schema = onnx.defs.get_schema(op, version, domain)
    except Exception:  # no such op (or a custom domain): not ours to judge
        return None
    return {name: int(attr.type) for name, attr in schema.attributes.items()}


def _text(value, what: str, name: str) -> str:
    if type(value) is not str:
        raise ModelError(f"'{name}' is damaged: {what} is not valid UTF-8 text")
    return value


def check_wellformed(model: onnx.ModelProto, name: str) -> None:
    """Raise ModelError (one line, naming the node) for the damage described above."""
    graph = model.graph
    opsets = {}
    for imp in model.opset_import:
        domain = _text(imp.domain, "an opset domain", name)
        opsets["" if domain == "ai.onnx" else domain] = imp.version
    _text(graph.name, "the graph's name", name)
    for prop in model.metadata_props:
        _text(prop.key, "a metadata key", name)
        _text(prop.value, "a metadata value", name)
    for vi in (*graph.input, *graph.output, *graph.value_info):
        _text(vi.name, "a tensor name", name)
    for t in graph.initializer:
        tname = _text(t.name, "an initializer name", name)
        if t.data_type not in _DATA_TYPES:
            raise ModelError(f"'{name}' is damaged: initializer '{tname}' has no valid data type ({t.data_type})")
    for node in graph.node:
        op = _text(node.op_type, "an op type", name)
        domain = _text(node.domain, "an op domain", name)
        label = f"node '{_text(node.name, 'a node name', name) or op}' ({op})"
        for tensor in (*node.input, *node.output):
            _text(tensor, f"a tensor name of {label}", name)
        if not node.attribute:
            continue
        version = opsets.get("" if domain == "ai.onnx" else domain)
        declared = None if version is None else _schema_types(op, domain, version)
        lengths = {}
        for a in node.attribute:
            aname = _text(a.name, f"an attribute name of {label}", name)
            if a.type not in _ATTR_TYPES:
                raise ModelError(f"'{name}' is damaged: attribute '{aname}' of {label} has no valid type")
            if declared is not None:
                want = declared.get(aname)
                if want is not None and want != a.type:
                    raise ModelError(
                        f"'{name}' is damaged: attribute '{aname}' of {label} is "
                        f"{AttributeProto.AttributeType.Name(a.type)}, its op declares "
                        f"{AttributeProto.AttributeType.Name(want)}"
                    )
            if aname in _PER_AXIS and a.type == AttributeProto.INTS:
                lengths[aname] = len(a.ints)
            elif a.type == AttributeProto.STRING:
                try:
                    a.s.decode("utf-8")
                except UnicodeDecodeError:
                    raise ModelError(f"'{name}' is damaged: attribute '{aname}' of {label} is not valid UTF-8") from None
        if len(lengths) > 1:
            axes = {n // _PER_AXIS[k] for k, n in lengths.items() if n % _PER_AXIS[k] == 0}
            if len(axes) != 1 or any(n % _PER_AXIS[k] for k, n in lengths.items()):
                shown = ", ".join(f"{k} has {n}" for k, n in sorted(lengths.items()))
                raise ModelError(f"'{name}' is damaged: the window attributes of {label} disagree ({shown} values)")
    check_tensor_data(model, name)


INT64_MAX = 2**63 - 1


def dims_problem(dims) -> str | None:
    """Why a tensor of ``dims`` cannot be real (a negative dim, more elements than int64 counts), or None."""
    import math

    if any(d < 0 for d in dims):
        return f"a negative dim ({list(dims)})"
    if math.prod(dims) > INT64_MAX:
        return f"more elements than int64 can count ({'x'.join(map(str, dims))})"
    return None


def _stored_count(t: TensorProto) -> tuple[int, int] | None:
    """(what ``t`` holds, what its dims and type need), in bytes for raw_data and in values for the
    typed fields; None where it is not judged (external data, segments, types onnx does not name)."""
    import math

    n = math.prod(t.dims)
    if t.data_location == TensorProto.EXTERNAL or t.HasField("segment"):
        return None
    packed = t.data_type in {getattr(TensorProto, k) for k in ("INT4", "UINT4", "FLOAT4E2M1") if hasattr(TensorProto, k)}
    try:
        if t.raw_data:
            size = 1 if packed else onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
            return len(t.raw_data), (n + 1) // 2 if packed else n * size
        field = onnx.helper.tensor_dtype_to_field(t.data_type)
    except Exception:  # a type this onnx does not know
        return None
    if packed:
        return None  # packed two to a value
    per = 2 if t.data_type in (TensorProto.COMPLEX64, TensorProto.COMPLEX128) else 1
    return len(getattr(t, field)), n * per


def tensor_problem(t: TensorProto) -> str | None:
    """Why tensor ``t``'s data disagrees with its dims and type, or None."""
    why = dims_problem(t.dims)
    if why is not None:
        return f"tensor '{t.name}' has {why}"
    counts = _stored_count(t)
    if counts is not None and counts[0] != counts[1]:
        unit = "bytes" if t.raw_data else "values"
        return (f"tensor '{t.name}' holds {counts[0]} {unit} of data where its dims "
                f"({'x'.join(map(str, t.dims)) or 'a scalar'}) need {counts[1]}")
    return None


def check_tensor_data(model: onnx.ModelProto, name: str) -> None:
    """Raise ModelError when any tensor of ``model`` (subgraphs, attributes and sparse tensors
    too) holds more or less data than its dims say, or has dims no tensor can have."""
    from cnncli.frontend.external import all_tensors

    for t in all_tensors(model):
        why = tensor_problem(t)
        if why is not None:
            raise ModelError(f"'{name}' is damaged: {why}")


def check_runnable(model: onnx.ModelProto, name: str) -> None:
    """Before a model is run (its weights read by numpy and onnxruntime): every tensor's data
    agrees with its dims, and no Conv's weight is empty (nothing to show of it)."""
    check_tensor_data(model, name)
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1 and node.input[1] in inits:
            dims = list(inits[node.input[1]].dims)
            if 0 in dims:
                raise ModelError(f"'{name}' is damaged: {node.op_type} '{node.name or node.output[0]}' has an empty "
                                 f"weight ({'x'.join(map(str, dims))})")


def check_shapes(shapes: dict, user_param: str | None = None) -> None:
    """Raise a one-line error for a shape with more elements than int64 counts (onnx's inference
    wraps around there: negative sizes, wrong costs) or a negative dim (a window larger than its
    padded input: the input is too small, or the shapes do not fit together). ``user_param``: the
    option that set the input shapes (``--input-shape``, ``--batch``), whose value is then the
    cause: a usage error naming it instead of a damaged model."""
    from cnncli.errors import BadArgument
    from cnncli.frontend.parsed import damaged

    negative = None  # reported after every shape was checked for overflow
    for tensor, shape in shapes.items():
        if not shape:
            continue
        for d in shape:
            if d is not None and not 0 <= d < 2**31:
                why = dims_problem([d for d in shape if d is not None])
                if why is None:
                    break
                if why.startswith("a negative"):
                    negative = negative or (tensor, why)
                elif user_param is not None:
                    raise BadArgument(user_param, f"tensor '{tensor}' would have {why}: the input is too large")
                else:
                    raise damaged(f"tensor '{tensor}' has {why}")
                break
    if negative is not None and user_param is not None:
        raise BadArgument(user_param, f"tensor '{negative[0]}' would have {negative[1]}: the input is smaller "
                                      "than a window over it")
    if negative is not None:
        raise damaged(f"tensor '{negative[0]}' would have {negative[1]}: the input is smaller than a window "
                      "over it, or the model's shapes do not fit together", "does not fit its input")


def densify_sparse(model: onnx.ModelProto, name: str) -> None:
    """Replace the graph's sparse initializers by dense ones before the model is run (the
    engine and onnxruntime's kernels then see plain weights); indices that do not fit the dense
    shape are damage."""
    import numpy as np
    from onnx import numpy_helper

    graph = model.graph
    for st in list(graph.sparse_initializer):
        label = st.values.name
        try:
            values, indices = numpy_helper.to_array(st.values), numpy_helper.to_array(st.indices).astype(np.int64)
            dims = tuple(st.dims)
            if indices.ndim == 2 and indices.shape[1] == len(dims):
                indices = np.ravel_multi_index(tuple(indices.T), dims)
            dense = np.zeros(dims, values.dtype)
            if values.ndim != 1 or indices.shape != values.shape or indices.size and (indices.min() < 0 or indices.max() >= dense.size):
                raise ValueError("its indices do not fit its values and dense shape")
            dense.reshape(-1)[indices] = values
        except (ValueError, TypeError, MemoryError) as exc:
            raise ModelError(f"'{name}' is damaged: sparse initializer '{label}': {str(exc).splitlines()[0]}") from None
        graph.initializer.append(numpy_helper.from_array(dense, label))
    del graph.sparse_initializer[:]
