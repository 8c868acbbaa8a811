"""The analysed graph: tensor shapes (ONNX shape inference), constants and weight sources.

``analyse`` turns a loaded ``ModelProto`` into a :class:`Graph` that the cost rules, the
receptive-field walk and the reverse-graph builder all read. It never prints. The graph's types
live in ``graph_types.py`` and the constants' discovery in ``constants.py``; the types are
imported from here too.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto

from cnncli.errors import BadArgument, CnnError, ModelError
from cnncli.frontend.damage import explain_if_damaged
from cnncli.frontend.constants import declared_shapes, find_consts, take_values
from cnncli.frontend.graph_types import (  # noqa: F401  the graph's types, imported from here by the layers above
    FLOAT_TYPES, ConstRef, Graph, InputSpec, NodeInfo, Shape, attrs, dtype_name, nbytes, node_table, numel, real_inputs,
)
from cnncli.gcpause import gc_paused

# float initializers up to this many elements keep their data for shape inference
_SMALL_TENSOR = 64


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
    # initializers: their shapes and types are set once, from the model (constants.find_consts)


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


_POOLS = ("MaxPool", "AveragePool", "LpPool")


def _compress_fixes(nodes, info: list[NodeInfo], shapes: dict, value_of) -> dict[str, tuple]:
    """Compress outputs whose length ONNX shape inference leaves unknown although the condition
    is a constant: its count of true values along the axis (or over the flattened input)."""
    fixes = {}
    for node, ni in zip(nodes, info):
        if ni.op != "Compress" or not ni.outputs or len(node.input) < 2:
            continue
        x, y, cond = shapes.get(node.input[0]), shapes.get(node.output[0]), value_of(node.input[1])
        if x is None or None in x or cond is None or (y is not None and None not in y):
            continue
        cond = [bool(v) for v in np.asarray(cond).reshape(-1)]
        axis = attrs(node).get("axis")
        if axis is None:
            fixes[node.output[0]] = (sum(cond[: math.prod(x)]),)
        elif -len(x) <= axis < len(x):
            axis %= len(x)
            fixes[node.output[0]] = (*x[:axis], sum(cond[: x[axis]]), *x[axis + 1:])
    return fixes


def _stft_fixes(nodes, info: list[NodeInfo], shapes: dict, value_of) -> dict[str, tuple]:
    """STFT outputs without an ``onesided`` attribute: its default is 1 (frame_length // 2 + 1
    bins, as onnxruntime and the reference compute), which onnx's shape inference takes as 0."""
    fixes = {}
    for node, ni in zip(nodes, info):
        if ni.op != "STFT" or not ni.outputs or "onesided" in attrs(node):
            continue
        y, ins = shapes.get(node.output[0]), list(node.input) + [""] * 4
        length = value_of(ins[3]) if ins[3] else None
        window = shapes.get(ins[2]) if ins[2] else None
        t = int(np.asarray(length).reshape(-1)[0]) if length is not None else window[0] if window else None
        if y is not None and len(y) == 4 and t and y[2] == t and t // 2 + 1 != t:
            fixes[node.output[0]] = (*y[:2], t // 2 + 1, y[3])
    return fixes


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
    from cnncli.frontend.folding import fold
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
    consts = find_consts(model.graph, shapes, types, info)

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
        inits = take_values(new, consts, shapes, types) if new else []
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
            symbolic, declared = symbolic_shapes(light), declared_shapes(model, inputs)
            extra = {**declared, **symbolic}
            for name, d in declared.items():  # a dim symbolic inference leaves unknown (Unique's length) as declared
                s = symbolic.get(name)
                if s is not None and len(s) == len(d):
                    extra[name] = tuple(a if a is not None else b for a, b in zip(s, d))
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
        fixes = {**_ceil_pool_fixes(nodes, info, shapes), **_compress_fixes(nodes, info, shapes, value_of),
                 **_stft_fixes(nodes, info, shapes, value_of)}
        if not fixes:
            break
        for name, shape in fixes.items():
            light.graph.value_info.append(onnx.helper.make_tensor_value_info(name, types.get(name, 1), list(shape)))
        infer()
        shapes.update(fixes)  # (a graph output's declared or inferred dims outlive the value_info)
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
