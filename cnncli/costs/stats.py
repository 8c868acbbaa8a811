"""Per-layer cost rows and totals for a model: the library behind ``cnn stats``."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import onnx

from cnncli.frontend.layers import is_numbered
from cnncli.costs.params import learned_scalars
from cnncli.costs.quantized import EIGHT_BIT
from cnncli.costs.rules import UNCOSTED, NodeView, cost, known_op, slots_for
from cnncli.costs.standard import VALUE_DEPENDENT
from cnncli.frontend.geometry import window
from cnncli.frontend.graph import FLOAT_TYPES, Graph, NodeInfo, dtype_name, nbytes, numel
from cnncli.gcpause import gc_paused
from cnncli.columns import col
from cnncli.costs.receptive import receptive_fields


@dataclass(frozen=True)
class LayerRow:
    index: int | None = col("#", "int", compact=True, doc="conv number (what --layer N takes)")  # 1-based
    name: str = col("name", compact=True, doc="node name in the model")
    op: str = col("op", compact=True, doc="ONNX operator")
    input_shape: list | None = col("input", "shape")
    output_shape: list | None = col("output", "shape", compact=True, unit="N×C×H×W",
                                    doc="output tensor shape: batch, channels, height, width")
    kernel: list | None = col("kernel", "shape")
    stride: list | None = col("stride", "shape")
    pads: list | None = col("pads", "dims")
    dilation: list | None = col("dilation", "shape")
    groups: int | None = col("groups", "int")
    macs: int | None = col("MACs", "int", unknown=True, compact=True,
                           doc="multiply-accumulates per image (1 MAC = 2 FLOPs)")
    flops_other: int | None = col("other FLOPs", "int", unknown=True)
    params: int | None = col("params", "int", compact=True, doc="learned scalars (weights and biases)")
    buffers: int | None = col("buffers", "int")
    cpr: int | float | None = col("CPR", "int", compact=True, unit="MACs/weight",
                                  doc="MACs per weight: how often each weight is used, output H×W for a conv")
    act_bytes: int | None = col("act bytes", "int", doc="bytes of the layer's output for one image")
    rf: list | None = col("RF", "shape", compact=True, unit="px",
                         doc="receptive field: input pixels one output unit sees (height × width)")
    rf_stride: list | None = col("RF stride", "shape")


@dataclass(frozen=True)
class OpRow:
    op: str = col("op", compact=True)
    count: int = col("count", "int", compact=True)
    macs: int | None = col("MACs", "int", compact=True)
    flops_other: int | None = col("other FLOPs", "int")
    params: int = col("params", "int", compact=True)
    act_bytes: int | None = col("act bytes", "int", compact=True)


@dataclass
class StatsResult:
    layers: list[LayerRow]
    totals: dict[str, Any]
    unknown_ops: list[str]  # op types of the rows whose cost is unknown (totals.unknown_ops)
    first_unknown: str | None = None  # why the first of those rows is unknown, for the warning
    unknown_rows: int = 0

    def warning(self) -> str | None:
        """The one warning for incomplete totals, naming the first node that could not be costed."""
        if not self.unknown_ops:
            return None
        n = self.unknown_rows
        return (f"totals are incomplete: {n} node{'s' if n != 1 else ''} of op type{'s' if len(self.unknown_ops) != 1 else ''} "
                f"{', '.join(self.unknown_ops)} cannot be costed; the first is {self.first_unknown}")


def _sum(values) -> int | None:
    total = 0
    for v in values:
        if v is None:
            return None
        total += v
    return total


def _display_name(ni: NodeInfo, i: int) -> str:
    return ni.name or (ni.outputs[0] if ni.outputs and ni.outputs[0] else f"{ni.op}_{i}")


def compute_stats(graph: Graph) -> StatsResult:
    with gc_paused():  # tens of thousands of small objects, none freed: see gc_paused
        return _compute_stats(graph)


def _compute_stats(graph: Graph) -> StatsResult:
    consts, types, shapes = graph.consts, graph.types, graph.shapes
    windows: dict[int, Any] = {}  # window() of the nodes the receptive-field walk worked it out for
    last: dict = {}
    fields = receptive_fields(graph, windows, last)
    fields.update(last)  # the RF column shows channels-last tensors' too (Keras through tf2onnx)
    counted: set[str] = set()  # weight sources already counted (a shared weight counts once)
    source_bytes: dict[str, tuple[int, int]] = {}
    rows: list[LayerRow] = []
    unknown: Counter[str] = Counter()
    first_unknown = None
    conv_index = 0
    nodes = graph.nodes
    slot_cache: dict[str, Any] = {}
    learned = None  # learned_scalars(graph), worked out at the first one-element operand
    eight_bit: dict[str, bool] = {}  # output of each DequantizeLinear: is what it dequantizes 8-bit?
    macs_int8 = 0
    for i, ni in enumerate(graph.info):
        op, domain, inputs, outputs = ni.op, ni.domain, ni.inputs, ni.outputs
        numbered = is_numbered(op, domain)
        if numbered:
            conv_index += 1
        if len(outputs) == 1:  # most nodes
            if outputs[0] in consts:  # a weight producer (Constant, ConstantOfShape, Cast of a weight, ...)
                if op == "DequantizeLinear" or (eight_bit and inputs and inputs[0] in eight_bit):
                    eight_bit[outputs[0]] = op != "DequantizeLinear" or types.get(inputs[0]) in EIGHT_BIT
                continue
            if not outputs[0]:
                outputs = ()
        else:
            outputs = [o for o in outputs if o]
            if outputs and all(o in consts for o in outputs):
                continue
        slots = slot_cache.get(op)
        if slots is None:
            slots = slot_cache[op] = slots_for(op)
        weight_numel = 0
        params = buffers = 0
        for slot, name in enumerate(inputs):
            if name not in consts:
                continue
            ref = consts[name]
            if ref.numel is None:
                continue
            consumed = types.get(name, ref.elem_type)
            is_param = slots.every_input or slot in slots.weight or slot in slots.extra
            is_buffer = slot in slots.buffer
            if not (is_param or is_buffer) or (consumed not in FLOAT_TYPES and not slots.integer):
                continue
            if slots.scalar_is_config and ref.numel == 1:
                if learned is None:
                    learned = learned_scalars(graph)
                if ref.source not in learned:
                    continue  # GELU's 0.5, a normalisation constant: configuration, not a weight
            if slot in slots.weight:
                weight_numel += ref.numel
            if ref.source in counted:
                continue
            counted.add(ref.source)
            source_bytes[ref.source] = (ref.numel, ref.elem_type)
            if is_buffer:
                buffers += ref.numel
            else:
                params += ref.numel
        node = nodes[i]
        view = NodeView(node, graph, ni)
        c = cost(view)
        known = known_op(op, domain)
        if c.macs is None or c.flops_other is None:
            unknown[op if domain in ("", "ai.onnx") else f"{domain}.{op}"] += 1
            if first_unknown is None:
                first_unknown = _why_unknown(ni, i, view, known)
        elif known and c.macs == 0 and c.flops_other == 0 and params == 0 and buffers == 0:
            continue
        elif c.int8 or (eight_bit and op in QDQ_OPS and _dequantized_8bit(eight_bit, inputs)):
            macs_int8 += c.macs
        if op == "DequantizeLinear" and outputs:
            eight_bit[outputs[0]] = types.get(inputs[0]) in EIGHT_BIT
        act = 0
        for o in outputs:
            n = numel(shapes.get(o))
            if n is None:
                act = None
                break
            act += nbytes(n, types.get(o, 1))
        win = None
        slot = WINDOWED.get(op)
        if slot is not None:
            if i in windows:
                win = windows[i]  # same node, input shape and kernel: the same window
            else:
                w = shapes.get(ni.inputs[slot]) if slot and len(ni.inputs) > slot else None
                kernel = tuple(w[2:]) if w and None not in w else None
                win = window(node, view.ins[0], kernel)
        rf = fields.get(outputs[0]) if outputs else None
        cpr = None
        if weight_numel and c.macs:
            cpr = c.macs // weight_numel if c.macs % weight_numel == 0 else round(c.macs / weight_numel, 3)
        rows.append(
            LayerRow(
                index=conv_index if numbered else None,
                name=_display_name(ni, i),
                op=op,
                input_shape=list(view.ins[0]) if view.ins and view.ins[0] is not None else None,
                output_shape=list(view.outs[0]) if view.outs and view.outs[0] is not None else None,
                kernel=list(win.kernel) if win else None,
                stride=list(win.strides) if win else None,
                pads=list(win.pads) if win else None,
                dilation=list(win.dilations) if win else None,
                groups=win.group if win and slot else None,
                macs=c.macs,
                flops_other=c.flops_other,
                params=params,
                buffers=buffers,
                cpr=cpr,
                act_bytes=act,
                rf=[a.size for a in rf] if rf else None,
                rf_stride=[a.jump for a in rf] if rf else None,
            )
        )
    totals = _totals(graph, rows, source_bytes, sorted(unknown), macs_int8)
    return StatsResult(rows, totals, sorted(unknown), first_unknown, sum(unknown.values()))


def _why_unknown(ni: NodeInfo, i: int, view: NodeView, known: bool) -> str:
    label = f"'{_display_name(ni, i)}' ({ni.op})"
    if not known:
        if ni.op in UNCOSTED and ni.domain in ("", "ai.onnx"):
            return f"{label}: the cost of its body depends on the data"
        return f"{label}: cnncli has no cost rule for this op"
    slot = VALUE_DEPENDENT.get(ni.op)
    if slot is not None and len(ni.inputs) > slot and ni.inputs[slot] not in view.graph.consts:
        return f"{label}: its cost depends on the values of its input '{ni.inputs[slot]}'"
    for kind, names, got in (("input", ni.inputs, view.ins), ("output", ni.outputs, view.outs)):
        for name, shape in zip(names, got):
            if name and (shape is None or None in shape):
                return f"{label}: the shape of its {kind} '{name}' is unknown"
    return f"{label}: its shapes do not fit its cost rule"


# sliding-window ops whose rows show their geometry: the input slot of a conv's weight (its kernel
# is the weight's spatial dims), 0 for pools (kernel_shape)
WINDOWED = {"Conv": 1, "ConvTranspose": 1, "ConvInteger": 1, "QLinearConv": 3, "DeformConv": 1, "FusedConv": 1,
            "MaxPool": 0, "AveragePool": 0, "LpPool": 0, "QLinearAveragePool": 0}

# float layers whose two multiplied operands are dequantized 8-bit tensors (the QDQ format)
QDQ_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})


def _dequantized_8bit(eight_bit: dict[str, bool], inputs) -> bool:
    return len(inputs) > 1 and eight_bit.get(inputs[0], False) and eight_bit.get(inputs[1], False)


def _totals(graph: Graph, rows: list[LayerRow], source_bytes, unknown_ops: list[str], macs_int8: int = 0) -> dict[str, Any]:
    # one pass over the rows (this runs on models of tens of thousands of layers)
    macs = other = params = buffers = convs = 0
    incomplete = False
    largest = None
    for r in rows:
        m, o, act = r.macs, r.flops_other, r.act_bytes
        macs += m or 0
        other += o or 0
        params += r.params or 0
        buffers += r.buffers or 0
        if r.index is not None:
            convs += 1
        if m is None or o is None:
            incomplete = True
        if act is not None and (largest is None or act > largest["bytes"]):
            largest = {"name": r.name, "bytes": act}
    per_type: Counter[int] = Counter()
    for n, elem in source_bytes.values():
        per_type[elem] += nbytes(n, elem)
    by_dtype: Counter[str] = Counter()
    for elem, size in per_type.items():
        by_dtype[dtype_name(elem)] += size
    return {
        "macs": macs,
        "macs_int8": macs_int8,
        "flops": 2 * macs + other,
        "flops_other": other,
        "params": params,
        "buffers": buffers,
        "weight_bytes": dict(sorted(by_dtype.items())),
        "largest_activation": largest,
        "layers": len(rows),
        "convs": convs,
        "incomplete": incomplete,
        "unknown_ops": unknown_ops,
    }


def by_op(rows: list[LayerRow]) -> list[OpRow]:
    """One row per op type, in order of first appearance."""
    groups: dict[str, list[LayerRow]] = {}
    for r in rows:
        groups.setdefault(r.op, []).append(r)
    return [
        OpRow(
            op=op,
            count=len(rs),
            macs=_sum(r.macs for r in rs),
            flops_other=_sum(r.flops_other for r in rs),
            params=sum(r.params or 0 for r in rs),
            act_bytes=_sum(r.act_bytes for r in rs),
        )
        for op, rs in groups.items()
    ]


def sort_rows(rows: list, row_type: type, column: str) -> list:
    """Numbers largest first, shapes largest first (by element count, then axis by axis), text
    A to Z; unknowns last; stable, so ties keep graph order."""
    import dataclasses
    import math

    from cnncli.errors import BadArgument

    fields = {f.name: f for f in dataclasses.fields(row_type)}
    if column not in fields:
        raise BadArgument("--sort", f"no column '{column}' (columns: {', '.join(fields)})")
    kind = fields[column].metadata.get("kind", "text")

    def value(r):
        return getattr(r, column)

    if kind in ("shape", "dims"):
        def key(r):
            v = value(r)
            if not isinstance(v, (list, tuple)) or any(not isinstance(x, (int, float)) for x in v):
                return (True, 0, ())
            size = math.prod(v) if kind == "shape" else 0
            return (False, -size, tuple(-x for x in v))

        return sorted(rows, key=key)
    sample = next((value(r) for r in rows if value(r) is not None), None)
    if isinstance(sample, (int, float)):
        return sorted(rows, key=lambda r: (value(r) is None, -(value(r) or 0)))
    return sorted(rows, key=lambda r: (value(r) is None, str(value(r))))


def sorted_top(rows: list, row_type: type, column: str | None, top: int | None) -> list:
    """``rows`` sorted by ``column`` (:func:`sort_rows`) when one is given, then the first ``top``
    (``--sort`` and ``--top`` of stats and profile)."""
    if column:
        rows = sort_rows(rows, row_type, column)
    return rows[:top] if top else rows
