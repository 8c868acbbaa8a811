"""The reverse-graph builder: a deconvnet / gradient / guided-backprop pass as an ONNX graph.

Given an analysed forward graph and a target tensor, :func:`build_reverse` writes an opset-17
ONNX graph that takes a signal shaped like the target (batch K: one row per channel or unit to
project) plus the forward tensors it needs (activations, pooling switches, weights) and returns
the signal in input pixel space. The three modes differ only at ReLU-family activations
(Zeiler & Fergus; Simonyan et al.; Springenberg et al.):

    backprop    R · f'(x)            (the exact gradient)
    deconvnet   f(R)                 (ZF: rectify the reconstruction; max(R, 0) for ReLU)
    guided      f(R) · f'(x)

Every other op is replaced by its exact transpose (its Jacobian's adjoint at the forward point),
so backprop mode is the true gradient. LRN is skipped in deconvnet and guided, as in the paper,
and differentiated exactly in backprop. One small function per op, registered in ``RULES``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from cnncli.errors import UnsupportedError
from cnncli.geometry import Window, window
from cnncli.graph import Graph, attrs

OPSET = 17
MODES = ("deconvnet", "backprop", "guided")
SEED = "seed"
OUTPUT = "projection"
RELU_FAMILY = frozenset({"Relu", "LeakyRelu", "PRelu", "Clip"})


@dataclass
class ReverseGraph:
    model: onnx.ModelProto
    needed: list[str]  # forward tensors the reverse graph reads (graph inputs of the same name)
    extra_outputs: dict[str, tuple[str, int]]  # forward node output to add: name -> (MaxPool node name, slot)
    target: str
    input_name: str


@dataclass
class Builder:
    graph: Graph
    mode: str
    nodes: list = field(default_factory=list)
    inits: list = field(default_factory=list)
    needed: dict = field(default_factory=dict)  # forward name -> elem type
    extra_outputs: dict = field(default_factory=dict)
    extra_shapes: dict = field(default_factory=dict)  # shapes of the added forward outputs
    count: int = 0

    def fresh(self, hint: str) -> str:
        self.count += 1
        return f"r{self.count}/{hint}"

    def fwd(self, name: str) -> str:
        """A forward tensor the reverse pass reads; it becomes a reverse-graph input."""
        self.needed.setdefault(name, self.graph.types.get(name, TensorProto.FLOAT))
        return name

    def const(self, value, hint: str = "c", dtype=np.float32) -> str:
        name = self.fresh(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def ints(self, values, hint: str = "i") -> str:
        return self.const(np.asarray(values, dtype=np.int64), hint, np.int64)

    def op(self, op_type: str, inputs: list[str], hint: str = "", **kwargs) -> str:
        out = self.fresh(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **kwargs))
        return out

    # shape helpers: the reverse batch K differs from the forward batch, so reshapes keep dim 0 free
    def reshape(self, x: str, fwd_shape, hint: str = "reshape") -> str:
        return self.op("Reshape", [x, self.ints([-1, *fwd_shape[1:]])], hint)

    def zeros_like_batch(self, ref: str, fwd_shape) -> str:
        batch = self.op("Slice", [self.op("Shape", [ref]), self.ints([0]), self.ints([1])], "batch")
        shape = self.op("Concat", [batch, self.ints(list(fwd_shape[1:]))], "zshape", axis=0)
        return self.op("ConstantOfShape", [shape], "zeros", value=helper.make_tensor("z", TensorProto.FLOAT, [1], [0.0]))

    def reduce_to(self, g: str, from_shape, to_shape) -> str:
        """Sum a signal over the axes along which ``to_shape`` was broadcast up to ``from_shape``."""
        if to_shape is None or from_shape is None or tuple(to_shape) == tuple(from_shape):
            return g
        lead = len(from_shape) - len(to_shape)
        axes = list(range(lead)) + [
            lead + i for i, (a, b) in enumerate(zip(to_shape, from_shape[lead:])) if a == 1 and b != 1
        ]
        if axes:
            g = self.op("ReduceSum", [g, self.ints(axes)], "unbroadcast", keepdims=1)
        if lead:
            g = self.op("Reshape", [g, self.ints(list(to_shape))], "unbroadcast")
        return g

    def float_mask(self, cond: str) -> str:
        return self.op("Cast", [cond], "mask", to=TensorProto.FLOAT)


Rule = Callable[[Builder, onnx.NodeProto, dict, list], dict]


def _shape(b: Builder, name: str):
    s = b.graph.shape(name)
    if s is None or None in s:
        raise UnsupportedError(f"the shape of '{name}' is unknown; cannot build its reverse pass")
    return s


def _is_dyn(b: Builder, name: str) -> bool:
    return bool(name) and name in b.dynamic  # type: ignore[attr-defined]


def _unsupported(node: onnx.NodeProto, why: str) -> UnsupportedError:
    return UnsupportedError(f"op {node.op_type} (node '{node.name or node.output[0]}') {why}")


# ---------------------------------------------------------------- linear ops with weights


def _conv(b: Builder, node, a, grads) -> dict:
    x, w = node.input[0], node.input[1]
    if _is_dyn(b, w):
        raise _unsupported(node, "has a weight computed from the input; not supported")
    xs, ws = _shape(b, x), _shape(b, w)
    win = window(node, xs, tuple(ws[2:]))
    out = _shape(b, node.output[0])
    pads_end, out_pad = _transpose_padding(win, xs[2:], out[2:])
    g = b.op(
        "ConvTranspose", [grads[0], b.fwd(w)], "conv_T",
        strides=list(win.strides), dilations=list(win.dilations), group=win.group,
        pads=list(win.pads_begin) + pads_end, output_padding=out_pad, kernel_shape=list(win.kernel),
    )
    return {x: g}


def _transpose_padding(win: Window, in_spatial, out_spatial) -> tuple[list[int], list[int]]:
    """Pads and output_padding for the ConvTranspose that is the adjoint of a strided window op.

    The transposed op must produce exactly the forward input size. It covers
    s·(out−1) + d·(k−1) + 1 positions from −pad_begin; what lies past the input is cut by the
    end pad, what is short of it (rows no window reached) is made up by output_padding.
    """
    pads_end, out_pad = [], []
    for n, o, k, s, d, pb in zip(in_spatial, out_spatial, win.kernel, win.strides, win.dilations, win.pads_begin):
        span = s * (o - 1) + d * (k - 1) + 1
        extra = n + pb - span  # > 0: rows at the end no window reached
        pads_end.append(max(-extra, 0))
        out_pad.append(max(extra, 0))
    return pads_end, out_pad


def _conv_transpose(b: Builder, node, a, grads) -> dict:
    x, w = node.input[0], node.input[1]
    if _is_dyn(b, w):
        raise _unsupported(node, "has a weight computed from the input; not supported")
    xs, ws, ys = _shape(b, x), _shape(b, w), _shape(b, node.output[0])
    k = tuple(a.get("kernel_shape", ws[2:]))
    r = len(k)
    s = a.get("strides", [1] * r)
    d = a.get("dilations", [1] * r)
    op = a.get("output_padding", [0] * r)
    if "pads" in a and a.get("auto_pad", "NOTSET") == "NOTSET":
        begin = a["pads"][:r]
    else:  # auto_pad or output_shape: recover the pads from the sizes, as the spec defines them
        begin = []
        for i in range(r):
            total = s[i] * (xs[2 + i] - 1) + op[i] + (k[i] - 1) * d[i] + 1 - ys[2 + i]
            upper = a.get("auto_pad", "NOTSET") == "SAME_UPPER"
            begin.append(total // 2 if upper else total - total // 2)
    # y[o] gathers x[i]·W[t] where o = i·s − pb + t·d, so the adjoint is a strided Conv of R
    # with the same W; its end pad reaches every x[i], and the crop drops what lies past X
    ends = [max(s[i] * (xs[2 + i] - 1) + d[i] * (k[i] - 1) + 1 - begin[i] - ys[2 + i], 0) for i in range(r)]
    g = b.op(
        "Conv", [grads[0], b.fwd(w)], "convT_T", strides=list(s), dilations=list(d),
        group=int(a.get("group", 1)), pads=list(begin) + ends, kernel_shape=list(k),
    )
    g = b.op("Slice", [g, b.ints([0] * r), b.ints(list(xs[2:])), b.ints(list(range(2, 2 + r)))], "crop")
    return {x: g}


def _gemm(b: Builder, node, a, grads) -> dict:
    A, B = node.input[0], node.input[1]
    alpha = float(a.get("alpha", 1.0))
    ta, tb = int(a.get("transA", 0)), int(a.get("transB", 0))
    R = grads[0]
    if alpha != 1.0:
        R = b.op("Mul", [R, b.const(alpha)], "alpha")
    out = {}
    if _is_dyn(b, A):
        # A' = op(A); dA' = R · op(B)ᵀ; dA = dA' or its transpose
        g = b.op("Gemm", [R, b.fwd(B)], "gemm_dA", transB=0 if tb else 1)
        out[A] = b.op("Transpose", [g], "T", perm=[1, 0]) if ta else g
    if _is_dyn(b, B):
        g = b.op("Gemm", [b.fwd(A), R], "gemm_dB", transA=0 if ta else 1)
        out[B] = b.op("Transpose", [g], "T", perm=[1, 0]) if tb else g
    if len(node.input) > 2 and _is_dyn(b, node.input[2]):
        beta = float(a.get("beta", 1.0))
        g = b.op("Mul", [grads[0], b.const(beta)], "beta") if beta != 1.0 else grads[0]
        out[node.input[2]] = b.reduce_to(g, _shape(b, node.output[0]), _shape(b, node.input[2]))
    return out


def _swap_last(b: Builder, name: str, rank: int) -> str:
    perm = list(range(rank))
    perm[-1], perm[-2] = perm[-2], perm[-1]
    return b.op("Transpose", [name], "T", perm=perm)


def _matmul(b: Builder, node, a, grads) -> dict:
    A, B = node.input
    sa, sb, sy = _shape(b, A), _shape(b, B), _shape(b, node.output[0])
    if len(sa) < 2 or len(sb) < 2:
        raise _unsupported(node, "with a 1-D operand is not supported")
    out = {}
    if _is_dyn(b, A):
        out[A] = b.reduce_to(b.op("MatMul", [grads[0], _swap_last(b, b.fwd(B), len(sb))], "mm_dA"), sy, sa)
    if _is_dyn(b, B):
        out[B] = b.reduce_to(b.op("MatMul", [_swap_last(b, b.fwd(A), len(sa)), grads[0]], "mm_dB"), sy, sb)
    return out


# ---------------------------------------------------------------- activations


def _relu_family(b: Builder, node, a, grads) -> dict:
    """f(R) in deconvnet, R·f'(x) in backprop, f(R)·f'(x) in guided."""
    x, R, op = node.input[0], grads[0], node.op_type
    if op == "Clip":
        lo, hi = _clip_bounds(b, node, a)
        if lo != 0.0:
            return _clip_exact(b, node, a, grads)
    rectified = None
    if b.mode in ("deconvnet", "guided"):
        if op == "Relu" or op == "Clip":
            rectified = b.op("Relu", [R], "rectify")
        elif op == "LeakyRelu":
            rectified = b.op("LeakyRelu", [R], "rectify", alpha=float(a.get("alpha", 0.01)))
        else:  # PRelu
            rectified = b.op("PRelu", [R, b.fwd(node.input[1])], "rectify")
        if b.mode == "deconvnet":
            return {x: rectified}
    xf = b.fwd(x)
    zero = b.const(0.0, "zero")
    if op in ("Relu", "Clip"):
        mask = b.float_mask(b.op("Greater", [xf, zero], "pos"))
        if op == "Clip" and hi is not None:
            mask = b.op("Mul", [mask, b.float_mask(b.op("Less", [xf, b.const(hi, "hi")], "below"))], "mask")
    else:
        slope = b.const(float(a.get("alpha", 0.01))) if op == "LeakyRelu" else b.fwd(node.input[1])
        pos = b.op("Greater", [xf, zero], "pos")
        mask = b.op("Where", [pos, b.const(1.0, "one"), slope], "slope")
    base = rectified if b.mode == "guided" else R
    return {x: b.op("Mul", [base, mask], "gate")}


def _clip_bounds(b: Builder, node, a) -> tuple[float, float | None]:
    if "min" in a or "max" in a:
        return float(a.get("min", -np.inf)), (float(a["max"]) if "max" in a else None)
    values = []
    for slot in (1, 2):
        name = node.input[slot] if len(node.input) > slot else ""
        if not name:
            values.append(None)
            continue
        v = b.const_values.get(name)  # type: ignore[attr-defined]
        if v is None:
            raise _unsupported(node, "has bounds computed at run time; not supported")
        values.append(float(np.asarray(v).reshape(-1)[0]))
    lo = -np.inf if values[0] is None else values[0]
    return lo, values[1]


def _clip_exact(b: Builder, node, a, grads) -> dict:
    lo, hi = _clip_bounds(b, node, a)
    xf = b.fwd(node.input[0])
    mask = b.float_mask(b.op("Greater", [xf, b.const(lo)], "above"))
    if hi is not None:
        mask = b.op("Mul", [mask, b.float_mask(b.op("Less", [xf, b.const(hi)], "below"))], "mask")
    return {node.input[0]: b.op("Mul", [grads[0], mask], "gate")}


def _sigmoid(b: Builder, node, a, grads) -> dict:
    y = b.fwd(node.output[0])
    d = b.op("Mul", [y, b.op("Sub", [b.const(1.0), y])], "dsig")
    return {node.input[0]: b.op("Mul", [grads[0], d], "gate")}


def _tanh(b: Builder, node, a, grads) -> dict:
    y = b.fwd(node.output[0])
    d = b.op("Sub", [b.const(1.0), b.op("Mul", [y, y])], "dtanh")
    return {node.input[0]: b.op("Mul", [grads[0], d], "gate")}


def _hard_sigmoid(b: Builder, node, a, grads) -> dict:
    alpha, beta = float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))
    t = b.op("Add", [b.op("Mul", [b.fwd(node.input[0]), b.const(alpha)]), b.const(beta)], "hs")
    inside = b.op("Mul", [
        b.float_mask(b.op("Greater", [t, b.const(0.0)])), b.float_mask(b.op("Less", [t, b.const(1.0)]))
    ], "inside")
    return {node.input[0]: b.op("Mul", [grads[0], b.op("Mul", [inside, b.const(alpha)])], "gate")}


def _hard_swish(b: Builder, node, a, grads) -> dict:
    # y = x·clip(x/6 + 1/2, 0, 1): y' = 0 below −3, 1 above 3, (2x + 3)/6 between
    x = b.fwd(node.input[0])
    mid = b.op("Add", [b.op("Mul", [x, b.const(1 / 3)]), b.const(0.5)], "mid")
    above = b.op("Greater", [x, b.const(3.0)])
    below = b.op("Less", [x, b.const(-3.0)])
    d = b.op("Where", [above, b.const(1.0), b.op("Where", [below, b.const(0.0), mid])], "dhswish")
    return {node.input[0]: b.op("Mul", [grads[0], d], "gate")}


# ---------------------------------------------------------------- elementwise arithmetic


def _add_sub(b: Builder, node, a, grads) -> dict:
    out, ys = {}, _shape(b, node.output[0])
    for slot, name in enumerate(node.input):
        if not _is_dyn(b, name):
            continue
        g = grads[0]
        if node.op_type == "Sub" and slot == 1:
            g = b.op("Neg", [g], "neg")
        g = b.reduce_to(g, ys, _shape(b, name))
        out[name] = b.op("Add", [out[name], g], "acc") if name in out else g
    return out


def _mul(b: Builder, node, a, grads) -> dict:
    A, B = node.input
    out, ys = {}, _shape(b, node.output[0])
    if _is_dyn(b, A):
        out[A] = b.reduce_to(b.op("Mul", [grads[0], b.fwd(B)], "dmul"), ys, _shape(b, A))
    if _is_dyn(b, B):
        g = b.reduce_to(b.op("Mul", [grads[0], b.fwd(A)], "dmul"), ys, _shape(b, B))
        out[B] = b.op("Add", [out[B], g], "acc") if B in out else g
    return out


def _div(b: Builder, node, a, grads) -> dict:
    A, B = node.input
    if _is_dyn(b, B):
        raise _unsupported(node, "divides by a tensor computed from the input; not supported")
    return {A: b.reduce_to(b.op("Div", [grads[0], b.fwd(B)], "ddiv"), _shape(b, node.output[0]), _shape(b, A))}


def _sum(b: Builder, node, a, grads) -> dict:
    return _add_sub(b, node, a, grads)


def _batchnorm(b: Builder, node, a, grads) -> dict:
    x = node.input[0]
    rank = len(_shape(b, x))
    scale, var = b.fwd(node.input[1]), b.fwd(node.input[4])
    k = b.op("Div", [scale, b.op("Sqrt", [b.op("Add", [var, b.const(float(a.get("epsilon", 1e-5)))])])], "bn_k")
    k = b.op("Reshape", [k, b.ints([1, -1] + [1] * (rank - 2))], "bn_k")
    return {x: b.op("Mul", [grads[0], k], "bn_T")}


# ---------------------------------------------------------------- pooling


def _maxpool(b: Builder, node, a, grads) -> dict:
    """Switch unpooling as a scatter-add: windows that share a switch add their signals."""
    x = node.input[0]
    xs, ys = _shape(b, x), _shape(b, node.output[0])
    if len(node.output) > 1 and node.output[1]:
        idx_name = node.output[1]
        storage = int(a.get("storage_order", 0))
    else:
        idx_name = f"cnncli/indices/{node.output[0]}"
        b.extra_outputs[idx_name] = (node.name or node.output[0], 1)
        b.extra_shapes[idx_name] = ["N", *ys[1:]]
        storage = 0
    plane = int(np.prod(xs[1:]))
    b.needed.setdefault(idx_name, TensorProto.INT64)
    idx = b.op("Mod", [b.fwd(idx_name), b.ints(plane)], "local_idx")  # drop the forward batch offset
    if storage == 1:  # column-major indices: convert to row-major
        hw = int(np.prod(xs[2:]))
        h, w = xs[2], xs[3]
        c = b.op("Div", [idx, b.ints(hw)])
        r = b.op("Mod", [idx, b.ints(hw)])
        row = b.op("Mod", [r, b.ints(h)])
        colm = b.op("Div", [r, b.ints(h)])
        idx = b.op("Add", [b.op("Mul", [c, b.ints(hw)]), b.op("Add", [b.op("Mul", [row, b.ints(w)]), colm])])
    n_out = int(np.prod(ys[1:]))
    flat_r = b.op("Reshape", [grads[0], b.ints([-1, n_out])], "flat")
    idx = b.op("Reshape", [idx, b.ints([-1, n_out])], "flat_idx")
    idx = b.op("Expand", [idx, b.op("Shape", [flat_r])], "idx")
    zeros = b.op("Reshape", [b.zeros_like_batch(grads[0], xs), b.ints([-1, plane])], "flat0")
    g = b.op("ScatterElements", [zeros, idx, flat_r], "unpool", axis=1, reduction="add")
    return {x: b.reshape(g, xs, "unpooled")}


def _pool_divisors(win: Window, in_spatial, out_spatial, include_pad: bool) -> np.ndarray:
    """How many input positions each AveragePool window divides by, per output position."""
    per_axis = []
    for n, o, k, s, d, pb, pe in zip(in_spatial, out_spatial, win.kernel, win.strides, win.dilations, win.pads_begin, win.pads_end):
        counts = []
        for i in range(o):
            taps = i * s - pb + d * np.arange(k)
            lo, hi = (-pb, n + pe) if include_pad else (0, n)
            counts.append(int(np.sum((taps >= lo) & (taps < hi))))
        per_axis.append(np.asarray(counts, dtype=np.float64))
    div = per_axis[0]
    for c in per_axis[1:]:
        div = np.multiply.outer(div, c)
    return div


def _avgpool(b: Builder, node, a, grads) -> dict:
    x = node.input[0]
    xs, ys = _shape(b, x), _shape(b, node.output[0])
    win = window(node, xs, None)
    div = _pool_divisors(win, xs[2:], ys[2:], bool(a.get("count_include_pad", 0)))
    R = b.op("Mul", [grads[0], b.const((1.0 / div)[None, None])], "avg_div")
    channels = xs[1]
    ones = np.ones((channels, 1, *win.kernel), dtype=np.float32)
    pads_end, out_pad = _transpose_padding(win, xs[2:], ys[2:])
    g = b.op(
        "ConvTranspose", [R, b.const(ones, "ones")], "avg_T", group=channels, strides=list(win.strides),
        dilations=list(win.dilations), pads=list(win.pads_begin) + pads_end, output_padding=out_pad,
        kernel_shape=list(win.kernel),
    )
    return {x: g}


def _global_avg(b: Builder, node, a, grads) -> dict:
    xs = _shape(b, node.input[0])
    spatial = xs[2:]
    fill = np.full((1, 1, *spatial), 1.0 / float(np.prod(spatial)), dtype=np.float32)
    return {node.input[0]: b.op("Mul", [grads[0], b.const(fill, "spread")], "gap_T")}


def _global_max(b: Builder, node, a, grads) -> dict:
    # One switch per channel: the first maximum (ArgMax), as MaxPool picks. Masking every position
    # equal to the max would count a value several times when it appears in several places (an
    # overlapping MaxPool before this one copies its maxima), giving a multiple of the gradient.
    x = node.input[0]
    xs = _shape(b, x)
    flat = b.op("Reshape", [b.fwd(x), b.ints([-1, xs[1], int(np.prod(xs[2:]))])], "gmp_flat")
    arg = b.op("ArgMax", [flat], "gmp_arg", axis=2, keepdims=1)
    zeros = b.op("ConstantOfShape", [b.op("Shape", [flat])], "zeros", value=helper.make_tensor("z", TensorProto.FLOAT, [1], [0.0]))
    ones = b.op("ConstantOfShape", [b.op("Shape", [arg])], "ones", value=helper.make_tensor("o", TensorProto.FLOAT, [1], [1.0]))
    mask = b.reshape(b.op("ScatterElements", [zeros, arg, ones], "gmp_switch", axis=2), xs, "gmp_mask")
    return {x: b.op("Mul", [grads[0], mask], "gmp_T")}


def _reduce_mean(b: Builder, node, a, grads) -> dict:
    xs = _shape(b, node.input[0])
    axes = a.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        v = b.const_values.get(node.input[1])  # type: ignore[attr-defined]
        axes = None if v is None else [int(i) for i in np.asarray(v).reshape(-1)]
    if axes is None:
        raise _unsupported(node, "without constant axes is not supported")
    axes = sorted(ax % len(xs) for ax in axes)
    if 0 in axes:
        raise _unsupported(node, "reduces over the batch axis; not supported")
    R = grads[0]
    if not int(a.get("keepdims", 1)):
        R = b.op("Unsqueeze", [R, b.ints(axes)], "keep")
    fill_shape = [1] * len(xs)
    for ax in axes:
        fill_shape[ax] = xs[ax]
    fill = np.full(fill_shape, 1.0 / float(np.prod([xs[ax] for ax in axes])), dtype=np.float32)
    return {node.input[0]: b.op("Mul", [R, b.const(fill, "spread")], "mean_T")}


def _lrn(b: Builder, node, a, grads) -> dict:
    x = node.input[0]
    if b.mode != "backprop":
        return {x: grads[0]}  # skipped in deconvnet and guided, as in the paper
    # y_i = x_i · D_i^−β, D_i = bias + α/n · Σ_{j∈W(i)} x_j²
    # dx_j = R_j·D_j^−β − (2αβ/n) · x_j · Σ_{i: j∈W(i)} R_i·x_i·D_i^(−β−1)
    n = int(a["size"])
    alpha, beta, bias = float(a.get("alpha", 1e-4)), float(a.get("beta", 0.75)), float(a.get("bias", 1.0))
    xs = _shape(b, x)
    before, after = (n - 1) // 2, n - 1 - (n - 1) // 2
    xf = b.fwd(x)
    sq = b.op("Mul", [xf, xf], "sq")
    D = b.op("Add", [b.op("Mul", [_channel_window_sum(b, sq, xs, before, after), b.const(alpha / n)]), b.const(bias)], "D")
    Dmb = b.op("Pow", [D, b.const(-beta)], "D_mb")
    term1 = b.op("Mul", [grads[0], Dmb], "t1")
    inner = b.op("Mul", [b.op("Mul", [grads[0], xf]), b.op("Div", [Dmb, D])], "inner")
    back = _channel_window_sum(b, inner, xs, after, before)  # the transposed (mirrored) window
    term2 = b.op("Mul", [b.op("Mul", [xf, back]), b.const(2 * alpha * beta / n)], "t2")
    return {x: b.op("Sub", [term1, term2], "lrn_T")}


def _channel_window_sum(b: Builder, t: str, xs, before: int, after: int) -> str:
    """Σ over channels c−before … c+after, zero outside, as a pooled sum along the channel axis."""
    c = xs[1]
    spatial = int(np.prod(xs[2:]))
    t4 = b.op("Reshape", [t, b.ints([-1, 1, c, spatial])], "chan")
    k = before + after + 1
    pooled = b.op(
        "AveragePool", [t4], "chan_sum", kernel_shape=[k, 1], pads=[before, 0, after, 0], count_include_pad=1
    )
    pooled = b.op("Mul", [pooled, b.const(float(k))], "chan_sum")
    return b.reshape(pooled, xs, "chan_back")


# ---------------------------------------------------------------- shape and routing ops


def _identity(b: Builder, node, a, grads) -> dict:
    return {node.input[0]: grads[0]}


def _cast(b: Builder, node, a, grads) -> dict:
    src = b.graph.types.get(node.input[0], TensorProto.FLOAT)
    if src != TensorProto.FLOAT:
        raise _unsupported(node, "from a non-float32 tensor is not supported")
    return {node.input[0]: grads[0]}


def _reshape_back(b: Builder, node, a, grads) -> dict:
    return {node.input[0]: b.reshape(grads[0], _shape(b, node.input[0]))}


def _transpose(b: Builder, node, a, grads) -> dict:
    perm = a.get("perm") or list(reversed(range(len(_shape(b, node.input[0])))))
    inverse = [0] * len(perm)
    for i, p in enumerate(perm):
        inverse[p] = i
    return {node.input[0]: b.op("Transpose", [grads[0]], "T", perm=inverse)}


def _concat(b: Builder, node, a, grads) -> dict:
    axis = int(a["axis"])
    shapes = [_shape(b, i) for i in node.input]
    axis %= len(shapes[0])
    sizes = [s[axis] for s in shapes]
    parts = [b.fresh("split") for _ in node.input]
    b.nodes.append(helper.make_node("Split", [grads[0], b.ints(sizes)], parts, name=parts[0] + "_n", axis=axis))
    out = {}
    for name, part in zip(node.input, parts):
        if _is_dyn(b, name):
            out[name] = b.op("Add", [out[name], part], "acc") if name in out else part
    return out


def _split(b: Builder, node, a, grads) -> dict:
    axis = int(a.get("axis", 0))
    pieces = []
    for out_name, g in zip(node.output, grads):
        pieces.append(g if g is not None else b.zeros_like_batch(_first(grads), _shape(b, out_name)))
    return {node.input[0]: b.op("Concat", pieces, "unsplit", axis=axis)}


def _first(grads):
    return next(g for g in grads if g is not None)


def _slice(b: Builder, node, a, grads) -> dict:
    x = node.input[0]
    xs, ys = _shape(b, x), _shape(b, node.output[0])
    # the end of each slice follows from the output shape; only starts, axes and steps matter
    if "starts" in a:
        starts = a["starts"]
        axes, steps = a.get("axes", list(range(len(starts)))), [1] * len(starts)
    else:
        vals = [b.const_values.get(n) if n else None for n in list(node.input[1:]) + [""] * 4]  # type: ignore[attr-defined]
        if vals[0] is None or vals[1] is None:
            raise _unsupported(node, "with starts/ends computed at run time is not supported")
        starts = [int(v) for v in vals[0]]
        axes = [int(v) for v in vals[2]] if vals[2] is not None else list(range(len(starts)))
        steps = [int(v) for v in vals[3]] if vals[3] is not None else [1] * len(starts)
    if any(s != 1 for s in steps):
        raise _unsupported(node, "with steps other than 1 is not supported")
    pads = [0] * (2 * len(xs))
    for st, ax in zip(starts, axes):
        ax %= len(xs)
        n = xs[ax]
        begin = min(max(st + n if st < 0 else st, 0), n)
        pads[ax] = begin
        pads[len(xs) + ax] = n - begin - ys[ax]
    if pads[0] or pads[len(xs)]:
        raise _unsupported(node, "slices the batch axis; not supported")
    return {x: b.op("Pad", [grads[0], b.ints(pads)], "unslice")}


def _pad(b: Builder, node, a, grads) -> dict:
    x = node.input[0]
    xs = _shape(b, x)
    if a.get("mode", "constant") != "constant":
        raise _unsupported(node, f"in mode '{a.get('mode')}' is not supported (constant only)")
    if "pads" in a:
        pads = a["pads"]
    else:
        v = b.const_values.get(node.input[1])  # type: ignore[attr-defined]
        if v is None or (len(node.input) > 3 and node.input[3]):
            raise _unsupported(node, "with pads computed at run time or explicit axes is not supported")
        pads = [int(p) for p in v]
    r = len(xs)
    if any(p < 0 for p in pads) or pads[0] or pads[r]:
        raise _unsupported(node, "with negative pads or pads on the batch axis is not supported")
    starts = list(pads[1:r])
    ends = [p + n for p, n in zip(starts, xs[1:])]
    return {x: b.op("Slice", [grads[0], b.ints(starts), b.ints(ends), b.ints(list(range(1, r)))], "unpad")}


def _resize(b: Builder, node, a, grads) -> dict:
    x = node.input[0]
    xs, ys = _shape(b, x), _shape(b, node.output[0])
    mode = a.get("mode", "nearest")
    # Upsample and Resize-10 (inputs X, scales): asymmetric coordinates, and ORT's old nearest
    # rule (truncate when upsampling, ceil when downsampling)
    legacy = node.op_type == "Upsample" or len(node.input) == 2
    if legacy:
        ctm, nearest = "asymmetric", None
    else:
        ctm = a.get("coordinate_transformation_mode", "half_pixel")
        nearest = a.get("nearest_mode", "round_prefer_floor")
    if mode not in ("nearest", "linear", "bilinear") or ctm == "tf_crop_and_resize":
        raise _unsupported(node, f"with mode '{mode}' / '{ctm}' is not supported (nearest and linear are)")
    if int(a.get("antialias", 0)) and mode != "nearest":
        raise _unsupported(node, "with antialias is not supported")
    if xs[:2] != ys[:2]:
        raise _unsupported(node, "resizing the batch or channel axis is not supported")
    scales = _resize_scales(b, node, a, len(xs), legacy)
    g = grads[0]
    r = len(xs)
    for axis in range(2, r):
        if xs[axis] == ys[axis]:
            continue  # onnxruntime copies an axis whose size does not change, whatever its scale
        scale = scales[axis] if scales is not None else None
        near = nearest or ("floor" if (scale or ys[axis] / xs[axis]) >= 1 else "ceil")
        m = resize_matrix(xs[axis], ys[axis], mode, ctm, near, scale)  # [out, in]
        perm = list(range(r))
        perm[axis], perm[-1] = perm[-1], perm[axis]
        g = b.op("Transpose", [g], "T", perm=perm) if axis != r - 1 else g
        g = b.op("MatMul", [g, b.const(m, "resize_m")], "resize_T")
        g = b.op("Transpose", [g], "T", perm=perm) if axis != r - 1 else g
    return {x: g}


def _resize_scales(b: Builder, node, a, rank: int, legacy: bool) -> list[float] | None:
    """The per-axis scales the node was given (the coordinate transform divides by these, not by
    out/in: 5 × 1.5 gives 7 outputs sampled at a step of 1/1.5), or None when it gives sizes."""
    if "scales" in a:  # Upsample-7
        values = a["scales"]
    else:
        slot = 1 if legacy else 2
        name = node.input[slot] if len(node.input) > slot else ""
        v = b.const_values.get(name) if name else None  # type: ignore[attr-defined]
        if v is None or np.asarray(v).size == 0:  # sizes given (or scales unknown until run time)
            return None
        values = [float(s) for s in np.asarray(v, dtype=np.float32).reshape(-1)]
    values = [float(np.float32(s)) for s in values]  # onnxruntime reads them as float32
    axes = a.get("axes")
    if axes is not None:  # opset 18: scales for the listed axes only
        full = [1.0] * rank
        for ax, s in zip(axes, values):
            full[ax % rank] = s
        values = full
    return values if len(values) == rank else None


def resize_matrix(n_in: int, n_out: int, mode: str, ctm: str, nearest_mode: str, scale: float | None = None) -> np.ndarray:
    """The [n_out, n_in] matrix of a 1-D ONNX Resize; ``scale`` is the given scale (default n_out / n_in)."""
    scale = n_out / n_in if scale is None else scale
    o = np.arange(n_out, dtype=np.float64)
    if ctm == "half_pixel":
        src = (o + 0.5) / scale - 0.5
    elif ctm == "pytorch_half_pixel":
        src = (o + 0.5) / scale - 0.5 if n_out > 1 else np.zeros_like(o)
    elif ctm == "align_corners":
        src = o * (n_in - 1) / (n_out - 1) if n_out > 1 else np.zeros_like(o)
    elif ctm == "asymmetric":
        src = o / scale
    elif ctm == "half_pixel_symmetric":
        adj = n_out / (scale * n_in)
        center = n_in / 2
        offset = center * (1 - adj)
        src = offset + (o + 0.5) / scale - 0.5
    elif ctm == "tf_half_pixel_for_nn":
        src = (o + 0.5) / scale
    else:
        raise UnsupportedError(f"Resize coordinate_transformation_mode '{ctm}' is not supported")
    m = np.zeros((n_out, n_in), dtype=np.float64)
    if mode == "nearest":
        if nearest_mode == "floor":
            idx = np.floor(src)
        elif nearest_mode == "ceil":
            idx = np.ceil(src)
        elif nearest_mode == "round_prefer_ceil":
            idx = np.floor(src + 0.5)
        else:  # round_prefer_floor
            idx = np.ceil(src - 0.5)
        idx = np.clip(idx, 0, n_in - 1).astype(int)
        m[np.arange(n_out), idx] = 1.0
    else:
        src = np.clip(src, 0, n_in - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        frac = src - lo
        np.add.at(m, (np.arange(n_out), lo), 1 - frac)
        np.add.at(m, (np.arange(n_out), hi), frac)
    return m.astype(np.float32)


RULES: dict[str, Rule] = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Relu": _relu_family,
    "LeakyRelu": _relu_family,
    "PRelu": _relu_family,
    "Clip": _relu_family,
    "Sigmoid": _sigmoid,
    "Tanh": _tanh,
    "HardSigmoid": _hard_sigmoid,
    "HardSwish": _hard_swish,
    "Add": _add_sub,
    "Sub": _add_sub,
    "Sum": _sum,
    "Mul": _mul,
    "Div": _div,
    "BatchNormalization": _batchnorm,
    "MaxPool": _maxpool,
    "AveragePool": _avgpool,
    "GlobalAveragePool": _global_avg,
    "GlobalMaxPool": _global_max,
    "ReduceMean": _reduce_mean,
    "LRN": _lrn,
    "Dropout": _identity,
    "Identity": _identity,
    "Cast": _cast,
    "Flatten": _reshape_back,
    "Reshape": _reshape_back,
    "Squeeze": _reshape_back,
    "Unsqueeze": _reshape_back,
    "Transpose": _transpose,
    "Concat": _concat,
    "Split": _split,
    "Slice": _slice,
    "Pad": _pad,
    "Resize": _resize,
    "Upsample": _resize,
}


def dynamic_tensors(graph: Graph, start: str) -> set[str]:
    """Tensors whose value depends on the input ``start``."""
    dyn = {start}
    for node in graph.nodes:
        if any(i in dyn for i in node.input if i):
            dyn.update(o for o in node.output if o)
    return dyn


def path_nodes(graph: Graph, target: str, dynamic: set[str]) -> list[onnx.NodeProto]:
    """Nodes between the input and ``target``, in graph order."""
    producer = {o: n for n in graph.nodes for o in n.output if o}
    wanted, stack, seen = set(), [target], set()
    while stack:
        t = stack.pop()
        if t in seen or t not in dynamic:
            continue
        seen.add(t)
        node = producer.get(t)
        if node is None:
            continue
        wanted.add(id(node))
        stack.extend(i for i in node.input if i)
    return [n for n in graph.nodes if id(n) in wanted]


def build_reverse(
    graph: Graph,
    target: str,
    mode: str,
    input_name: str,
    const_values=None,
) -> ReverseGraph:
    """Write the reverse graph from ``target`` back to the model input ``input_name``.

    ``const_values``: values of small constant tensors some rules need at build time (Clip
    bounds, Slice starts, Pad pads, ReduceMean axes). The result reads forward tensors by their
    own names; see :func:`bake_constants` to turn weight inputs into initializers.
    """
    if mode not in MODES:
        raise ValueError(mode)
    dynamic = dynamic_tensors(graph, input_name)
    if target not in dynamic:
        raise UnsupportedError(f"tensor '{target}' does not depend on input '{input_name}'")
    nodes = path_nodes(graph, target, dynamic)
    b = Builder(graph, mode)
    b.dynamic = dynamic  # type: ignore[attr-defined]
    b.const_values = const_values if const_values is not None else {}  # type: ignore[attr-defined]
    for node in nodes:  # check every op first: one clear error before any work
        if node.op_type not in RULES or node.domain not in ("", "ai.onnx"):
            raise UnsupportedError(
                f"op {node.op_type} (node '{node.name or node.output[0]}') lies between the input and "
                f"'{target}' and has no reverse rule; supported: {', '.join(sorted(RULES))}"
            )
    grads: dict[str, list[str]] = {target: [SEED]}
    for node in reversed(nodes):
        outs = []
        for o in node.output:
            gs = grads.pop(o, None)
            if not gs:
                outs.append(None)
            elif len(gs) == 1:
                outs.append(gs[0])
            else:
                outs.append(b.op("Sum", gs, "fanin"))
        if all(g is None for g in outs):
            continue
        if node.op_type != "Split" and outs[0] is None:
            continue  # only a secondary output (e.g. MaxPool indices) is used downstream
        for name, g in RULES[node.op_type](b, node, attrs(node), outs).items():
            if name in dynamic:
                grads.setdefault(name, []).append(g)
    final = grads.get(input_name)
    if not final:
        raise UnsupportedError(f"no signal from '{target}' reaches input '{input_name}'")
    result = final[0] if len(final) == 1 else b.op("Sum", final, "fanin")
    b.nodes.append(helper.make_node("Identity", [result], [OUTPUT], name="output"))
    target_shape = _shape(b, target)
    in_shape = _shape(b, input_name)
    inputs = [helper.make_tensor_value_info(SEED, TensorProto.FLOAT, ["K", *target_shape[1:]])]
    for name, elem in b.needed.items():
        shape = graph.shape(name) if name not in b.extra_shapes else b.extra_shapes[name]
        if shape is not None and name in dynamic:
            shape = ["N", *shape[1:]]  # the forward batch: 1 (shared by all rows) or K (one each)
        inputs.append(helper.make_tensor_value_info(name, elem, list(shape) if shape is not None else None))
    outputs = [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["K", *in_shape[1:]])]
    g = helper.make_graph(b.nodes, f"reverse_{mode}", inputs, outputs, b.inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="cnncli")
    model.ir_version = 8
    return ReverseGraph(model, list(b.needed), dict(b.extra_outputs), target, input_name)


def bake_constants(reverse: ReverseGraph, values: dict[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of the reverse model with the given forward tensors stored as initializers."""
    model = onnx.ModelProto()
    model.CopyFrom(reverse.model)
    keep = [i for i in model.graph.input if i.name not in values]
    baked = [i for i in model.graph.input if i.name in values]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    for vi in baked:
        model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(values[vi.name]), vi.name))
    return model
