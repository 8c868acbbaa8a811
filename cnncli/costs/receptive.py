"""Receptive fields: for each tensor on the spatial path from the image input, the size,
stride (jump) and offset of the input window that one position sees, per spatial axis.

A unit at position i of an axis sees input pixels ``start + i*jump`` to
``start + i*jump + size - 1`` (before clipping at the image border). Sizes are not clipped,
as in the literature (ZF net conv5: 139 pixels on a 224 image).

Tensors are channels-first ([N, C, H, W]: the spatial axes from the third on) except where the
walk follows a channels-last stretch ([N, H, W, C], a Keras model's input as tf2onnx writes it,
up to the Transpose that turns it channels-first): its tensors are followed through the same
pass-through, elementwise and Pad nodes, and only its channels-first tensors are returned.
"""

from __future__ import annotations

from dataclasses import dataclass

from cnncli.costs.rules import UNARY
from cnncli.frontend.geometry import window
from cnncli.frontend.graph import Graph, NodeInfo
from cnncli.frontend.layers import CONV_WEIGHT_SLOT


@dataclass(frozen=True)
class AxisRF:
    size: int
    jump: int
    start: int

    def box(self, i: int, limit: int | None = None) -> tuple[int, int]:
        """Input pixels [lo, hi) seen by position ``i``, clipped to [0, limit) when given."""
        lo = self.start + i * self.jump
        hi = lo + self.size
        if limit is not None:
            lo, hi = max(lo, 0), min(hi, limit)
        return lo, hi


RF = tuple  # of AxisRF, one per spatial axis

WINDOW_OPS = frozenset({"Conv", "ConvInteger", "QLinearConv", "MaxPool", "AveragePool", "LpPool"})
PASS_OPS = frozenset(UNARY) | {"BatchNormalization", "InstanceNormalization", "LRN", "Dropout", "Identity", "Split",
                                "Cast", "DynamicQuantizeLinear"}  # a quantized model's steps: values, not places
MERGE_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Sum", "Max", "Min", "Mean", "Concat", "PRelu"})


def _through_window(rf: RF, node, ni: NodeInfo, graph: Graph, windows: dict | None, index: int) -> RF | None:
    """``rf`` carried through window node ``node`` (``ni``: its NodeInfo, ``index``: its place,
    under which its Window is kept in ``windows`` when given)."""
    inputs = ni.inputs
    x = graph.shapes.get(inputs[0])
    if ni.op in CONV_WEIGHT_SLOT:
        slot = CONV_WEIGHT_SLOT[ni.op]
        w = graph.shapes.get(inputs[slot]) if len(inputs) > slot else None
        if w is None or None in w:
            return None
        kernel = tuple(w[2:])
    else:
        kernel = None
    win = window(node, x, kernel)
    if windows is not None:
        windows[index] = win
    if win is None or len(win.kernel) != len(rf):
        return None
    return tuple(
        AxisRF(a.size + (k - 1) * d * a.jump, a.jump * s, a.start - p * a.jump)
        for a, k, s, d, p in zip(rf, win.kernel, win.strides, win.dilations, win.pads_begin)
    )


def _pad_begins(node, graph: Graph, rank: int) -> list[int] | None:
    from cnncli.frontend.graph import attrs

    a = attrs(node)
    if "pads" in a:
        pads = a["pads"]
    elif len(node.input) > 1 and node.input[1] in graph.consts and graph.consts[node.input[1]].value is not None:
        pads = [int(p) for p in graph.consts[node.input[1]].value]
        if len(node.input) > 3 and node.input[3]:
            return None  # explicit axes: rare, not followed
    else:
        return None
    if a.get("mode", "constant") != "constant" or len(pads) != 2 * rank:
        return None
    return pads[:rank]


def receptive_fields(graph: Graph, windows: dict | None = None, last: dict | None = None) -> dict[str, RF]:
    """Walk the graph once, in order, from every 3-D or wider float input.

    ``windows``, when given, receives ``window()`` of every node it was worked out for (the
    node's input shape, and for Conv the kernel of its weight), by the node's index; ``last``
    receives the channels-last tensors' fields (height and width first, as the others), which
    the returned dict leaves out: a feature map is read channels-first everywhere else.
    """
    fields: dict[str, RF] = {}
    last = {} if last is None else last  # the channels-last tensors, [N, H, W, C]
    for spec in graph.inputs:
        if len(spec.shape) >= 3:
            (last if channels_last(spec.shape) else fields)[spec.name] = tuple(AxisRF(1, 1, 0) for _ in spec.shape[2:])
    starts = set(fields)
    get = fields.get
    nodes = graph.nodes
    for index, ni in enumerate(graph.info):
        outputs, inputs = ni.outputs, ni.inputs
        out = outputs[0] if outputs else ""
        if not out or not inputs:
            continue
        first = get(inputs[0])
        op = ni.op
        if op == "Transpose" or (last and first is None and any(i in last for i in inputs)):
            turned = _channels_last_step(nodes[index], ni, graph, first, last)
            if turned is not None:
                where, rf = turned
                (fields if where == "first" else last)[out] = rf
            continue
        if first is not None and op in WINDOW_OPS:
            rf = _through_window(first, nodes[index], ni, graph, windows, index)
        elif first is not None and op in PASS_OPS:
            rf = first
        elif first is not None and op in ("Squeeze", "Unsqueeze") and _batch_axis(nodes[index], graph):
            rf = first
            if op == "Unsqueeze" and inputs[0] in starts:  # a [C, H, W] input: its spatial axes are the last two
                rf = tuple(AxisRF(1, 1, 0) for _ in (graph.shape(out) or ())[2:])
        elif op in MERGE_OPS and any(ins := [get(i) for i in inputs]):
            out_shape = graph.shape(out)
            rf = _merge(
                [r for r, i in zip(ins, inputs) if r is not None and _same_grid(graph.shape(i), out_shape)]
            )
        elif first is not None and op == "Pad":
            x = graph.shape(inputs[0])
            begins = _pad_begins(nodes[index], graph, len(x)) if x else None
            rf = None if begins is None else tuple(
                AxisRF(a.size, a.jump, a.start - p * a.jump) for a, p in zip(first, begins[2:])
            )
        else:
            continue
        if rf is not None:
            targets = outputs if op == "Split" else (out,)
            for t in targets:
                fields[t] = rf
    return fields


def channels_last(shape) -> bool:
    """A 4-D image shape [N, H, W, C] (C of 1, 3 or 4 last, and not second): how a Keras model's
    input looks."""
    return len(shape) == 4 and shape[3] in (1, 3, 4) and shape[1] not in (1, 3, 4)


def _channels_last_step(node, ni: NodeInfo, graph: Graph, first: RF | None,
                        last: dict[str, RF]) -> tuple[str, RF] | None:
    """A node on a channels-last stretch: ("first", rf) where a Transpose turns it channels-first,
    ("last", rf) where it stays channels-last (or a Transpose turns a channels-first tensor
    channels-last); None where the walk loses it."""
    from cnncli.frontend.graph import attrs

    op, inputs = ni.op, ni.inputs
    rf = last.get(inputs[0])
    if op == "Transpose":
        x = graph.shape(inputs[0])
        if x is None:
            return None
        n = len(x)
        perm = tuple(attrs(node).get("perm") or range(n - 1, -1, -1))
        if rf is not None and perm == (0, n - 1, *range(1, n - 1)):
            return "first", rf
        if first is not None and perm == (0, *range(2, n), 1):
            return "last", first
        return None
    if rf is not None and op in PASS_OPS:
        return "last", rf
    if op in MERGE_OPS:
        out = graph.shape(ni.outputs[0])
        grid = [last[i] for i in inputs if i in last and _same_grid_last(graph.shape(i), out)]
        return ("last", _merge(grid)) if grid else None
    if rf is not None and op == "Pad":
        x = graph.shape(inputs[0])
        begins = _pad_begins(node, graph, len(x)) if x else None
        if begins is not None and begins[0] == 0 and begins[-1] == 0:
            return "last", tuple(AxisRF(a.size, a.jump, a.start - p * a.jump) for a, p in zip(rf, begins[1:-1]))
    return None


def _same_grid_last(a, b) -> bool:
    return a is not None and b is not None and len(a) == len(b) and a[1:-1] == b[1:-1]


def _batch_axis(node, graph: Graph) -> bool:
    """A Squeeze or Unsqueeze of axis 0 alone (a [C, H, W] input given or stripped of its batch
    axis): the spatial axes, the last ones, are untouched."""
    from cnncli.frontend.graph import attrs

    if len(node.input) > 1:
        ref = graph.consts.get(node.input[1])
        axes = None if ref is None or ref.value is None else [int(a) for a in ref.value.reshape(-1)]
    else:
        axes = attrs(node).get("axes")
    return axes == [0]


def _same_grid(a, b) -> bool:
    return a is not None and b is not None and len(a) == len(b) and a[2:] == b[2:]


def _merge(rfs: list[RF]) -> RF | None:
    if not rfs:
        return None
    if len(rfs) == 1:
        return rfs[0]
    merged = []
    for axis in zip(*rfs):
        lo = min(a.start for a in axis)
        hi = max(a.start + a.size for a in axis)
        merged.append(AxisRF(hi - lo, max(a.jump for a in axis), lo))
    return tuple(merged)
