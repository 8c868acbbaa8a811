"""Small random ONNX models for the reverse-pass tests (finite differences and the numpy reference).

Every builder returns a :class:`Case`: a float32 model (opset 17 unless said otherwise) whose
input is called "x", the tensor to project from, and a few channels worth checking. Weights come
from a seeded numpy generator, so every run sees the same numbers. Together the cases cover every
op that cnncli/reverse/ has a rule for (test_reverse_fd.py checks that they do).

Chain-style models for the numpy reference are written as a list of layer dicts (see
``numpy_deconv.py``) and turned into ONNX by :func:`chain_model`, so the two sides read the same
weights but share no code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FLOAT = TensorProto.FLOAT


@dataclass
class Case:
    name: str
    model: onnx.ModelProto
    target: str
    input_shape: tuple
    channels: list = field(default_factory=lambda: [0])

    def input(self, seed: int = 1, scale: float = 1.0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return (scale * rng.standard_normal(self.input_shape)).astype(np.float32)

    @property
    def ops(self) -> set[str]:
        return {n.op_type for n in self.model.graph.node}


class Net:
    """Collects nodes and initializers; every op returns its output name(s)."""

    def __init__(self, input_shape, seed: int = 0, opset: int = 17):
        self.rng = np.random.default_rng(seed)
        self.input_shape = tuple(input_shape)
        self.opset = opset
        self.nodes: list = []
        self.inits: list = []
        self.n = 0

    def name(self, hint: str) -> str:
        self.n += 1
        return f"{hint}{self.n}"

    def const(self, value, dtype=np.float32, hint: str = "k") -> str:
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def ints(self, values) -> str:
        return self.const(values, np.int64, "i")

    def randn(self, shape, scale: float = 1.0, hint: str = "w") -> str:
        return self.const(scale * self.rng.standard_normal(shape), hint=hint)

    def op(self, op_type: str, inputs, n_out: int = 1, **attrs):
        outs = [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=outs[0] + "_node", **attrs))
        return outs[0] if n_out == 1 else outs

    def conv(self, x: str, cin: int, cout: int, k, group: int = 1, bias: bool = True, gain: float = 1.0, **attrs) -> str:
        kh, kw = (k, k) if isinstance(k, int) else k
        fan_in = cin // group * kh * kw
        w = self.randn((cout, cin // group, kh, kw), gain * np.sqrt(2.0 / fan_in), "W")
        ins = [x, w] + ([self.randn((cout,), 0.1, "B")] if bias else [])
        return self.op("Conv", ins, group=group, **attrs)

    def conv_t(self, x: str, cin: int, cout: int, k: int, group: int = 1, bias: bool = True, **attrs) -> str:
        w = self.randn((cin, cout // group, k, k), np.sqrt(2.0 / (cin // group * k * k)) * 1.5, "WT")
        ins = [x, w] + ([self.randn((cout,), 0.1, "B")] if bias else [])
        return self.op("ConvTranspose", ins, group=group, **attrs)

    def model(self, target: str) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, "reverse_test",
            [helper.make_tensor_value_info("x", FLOAT, list(self.input_shape))],
            [helper.make_tensor_value_info(target, FLOAT, None)],
            self.inits,
        )
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)], producer_name="cnncli-tests")
        m.ir_version = _ir_version(self.opset)
        onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)  # fails on a malformed model
        return m

    def case(self, name: str, target: str, channels) -> Case:
        return Case(name, self.model(target), target, self.input_shape, list(channels))


def _ir_version(opset: int) -> int:
    if opset > 19:
        return helper.find_min_ir_version_for([helper.make_opsetid("", opset)])
    return 9 if opset >= 19 else 8 if opset >= 13 else 7


# ---------------------------------------------------------------- the op-coverage cases


def conv_geometry() -> Case:
    """Conv strides, asymmetric pads, SAME_UPPER, dilations, groups, depthwise; Relu, LeakyRelu, PRelu."""
    n = Net((1, 3, 17, 15), seed=10)
    t = n.conv("x", 3, 4, 3, strides=[2, 1], pads=[0, 1, 2, 0])           # [1,4,9,15]
    t = n.op("Relu", [t])
    t = n.conv(t, 4, 6, 3, auto_pad="SAME_UPPER", strides=[2, 2])          # [1,6,5,8]
    t = n.op("LeakyRelu", [t], alpha=0.1)
    t = n.conv(t, 6, 6, 3, group=2, dilations=[2, 1], pads=[2, 1, 1, 1])   # grouped, dilated
    t = n.op("PRelu", [t, n.randn((6, 1, 1), 0.3, "slope")])
    t = n.conv(t, 6, 6, (3, 2), group=6, pads=[1, 0, 1, 1], strides=[1, 2])  # depthwise
    t = n.op("Relu", [t])
    return n.case("conv_geometry", t, [0, 5])


def conv_transpose() -> Case:
    """ConvTranspose with stride, pads, output_padding, groups, SAME_UPPER; Clip(0,6) and Clip(-1,1)."""
    n = Net((1, 3, 12, 12), seed=11)
    t = n.conv("x", 3, 4, 3, strides=[2, 2], pads=[1, 1, 1, 1], gain=6.0)   # [1,4,6,6], some > 6
    t = n.op("Clip", [t, n.const(0.0), n.const(6.0)])                       # ReLU6
    t = n.conv_t(t, 4, 4, 3, group=2, strides=[2, 2], pads=[1, 0, 0, 1], output_padding=[1, 0])
    t = n.op("Clip", [t, n.const(-1.0), n.const(1.0)])
    t = n.conv_t(t, 4, 3, 3, strides=[2, 2], auto_pad="SAME_UPPER")
    t = n.op("Clip", [n.op("Mul", [t, n.const(8.0)]), n.const(0.0), n.const(6.0)])
    t = n.conv(t, 3, 4, 3, strides=[2, 2], pads=[1, 1, 1, 1])
    return n.case("conv_transpose", t, [1, 3])


def smooth_activations() -> Case:
    """Sigmoid, Tanh, HardSigmoid, HardSwish; Add/Sub/Mul/Div by per-channel constants (both sides)."""
    n = Net((1, 3, 12, 12), seed=12)
    t = n.conv("x", 3, 4, 3, pads=[1, 1, 1, 1], gain=1.5)
    t = n.op("Sigmoid", [n.op("Add", [t, n.randn((1, 4, 1, 1))])])
    t = n.op("Mul", [n.randn((4, 1, 1), 2.0), t])                          # constant first
    t = n.conv(t, 4, 4, 3, pads=[1, 1, 1, 1], gain=2.0)
    t = n.op("Tanh", [n.op("Sub", [t, n.randn((4, 1, 1))])])
    t = n.op("Sub", [n.randn((1, 4, 1, 1)), t])                            # constant minus tensor
    t = n.conv(t, 4, 4, 3, pads=[1, 1, 1, 1], gain=2.0)
    t = n.op("HardSigmoid", [t], alpha=0.3, beta=0.4)
    t = n.op("Div", [t, n.const([[[0.5]], [[2.0]], [[-1.5]], [[0.8]]])])
    t = n.conv(t, 4, 5, 3, pads=[1, 1, 1, 1], gain=3.0)
    t = n.op("HardSwish", [n.op("Add", [n.randn((5, 1, 1)), t])])
    t = n.op("Mul", [t, n.const(1.7)])                                      # scalar
    return n.case("smooth_activations", t, [0, 4])


def residual() -> Case:
    """A tensor feeding several nodes; Add, Sub and Sum of tensors, Add(t, t), Mul of two tensors
    (a squeeze-excite gate through GlobalAveragePool) and Mul(t, t)."""
    n = Net((1, 3, 12, 12), seed=13)
    stem = n.op("Relu", [n.conv("x", 3, 4, 3, pads=[1, 1, 1, 1])])
    a = n.op("Relu", [n.conv(stem, 4, 4, 3, pads=[1, 1, 1, 1])])
    b = n.conv(a, 4, 4, 3, pads=[1, 1, 1, 1])
    r = n.op("Relu", [n.op("Add", [stem, b])])                               # residual block
    c = n.conv(r, 4, 4, 1)
    s = n.op("Sum", [r, c, stem])                                            # three-way sum
    d = n.op("Sub", [s, n.conv(stem, 4, 4, 3, pads=[1, 1, 1, 1])])
    dd = n.op("Add", [d, d])                                                 # the same tensor twice
    gate = n.op("Sigmoid", [n.conv(n.op("GlobalAveragePool", [dd]), 4, 4, 1)])   # [1,4,1,1]
    t = n.op("Mul", [dd, gate])                                              # broadcast tensor product
    sq = n.op("Mul", [n.conv(t, 4, 3, 1, gain=0.5), n.conv(t, 4, 3, 1, gain=0.5)])
    sq2 = n.op("Mul", [sq, sq])                                              # Mul(t, t)
    t = n.op("Concat", [t, sq2], axis=1)
    t = n.op("Relu", [n.conv(t, 7, 5, 3, strides=[2, 2])])
    return n.case("residual", t, [0, 2])


def routing() -> Case:
    """Split (sizes, equal, an unused output), Concat (channels and width), Slice, Pad, Transpose."""
    n = Net((1, 3, 12, 14), seed=14)
    t = n.op("Relu", [n.conv("x", 3, 6, 3, pads=[1, 1, 1, 1])])               # [1,6,12,14]
    s1, s2 = n.op("Split", [t, n.ints([2, 4])], n_out=2, axis=1)
    e1, e2 = n.op("Split", [s2], n_out=2, axis=1)                            # equal halves
    _, u2 = n.op("Split", [s1], n_out=2, axis=3)                             # left half unused
    sl = n.op("Slice", [e2, n.ints([1, -10]), n.ints([11, 100]), n.ints([2, 3]), n.ints([1, 1])])  # [1,2,10,10]
    sl = n.op("Slice", [sl, n.ints([0]), n.ints([7]), n.ints([-1])])         # [1,2,10,7] negative axis, no steps
    sl = n.op("Pad", [sl, n.ints([0, 1, 2, 3, 0, 0, 0, 4])], mode="constant")  # [1,3,12,14]
    pe = n.op("Pad", [e1, n.ints([0, 0, 1, 0, 0, 0, 1, 0]), n.const(0.5)])   # value padding, [1,2,14,14]
    pe = n.op("Slice", [pe, n.ints([1, 0]), n.ints([13, 7]), n.ints([2, 3])])  # [1,2,12,7]
    w = n.op("Concat", [u2, pe], axis=3)                                     # [1,2,12,14] along width
    nhwc = n.op("Transpose", [w], perm=[0, 2, 3, 1])
    nhwc = n.op("Mul", [nhwc, n.randn((2,), 1.0)])                           # per-channel in NHWC
    w = n.op("Transpose", [nhwc], perm=[0, 3, 1, 2])
    t = n.op("Concat", [w, n.conv(sl, 3, 2, 1)], axis=1)                # [1,4,12,14]
    t = n.op("Relu", [n.conv(t, 4, 5, 3, strides=[2, 2])])
    return n.case("routing", t, [0, 4])


def max_pools() -> Case:
    """MaxPool: overlapping 3x3/2, padded with ceil_mode, dilated; GlobalMaxPool to a 2-D target."""
    n = Net((1, 3, 20, 20), seed=15)
    t = n.op("Relu", [n.conv("x", 3, 4, 3)])                                # [1,4,18,18]
    t = n.op("MaxPool", [t], kernel_shape=[3, 3], strides=[2, 2])            # overlapping -> 8x8
    t = n.conv(t, 4, 5, 3, pads=[1, 1, 1, 1])
    # ceil_mode: the last row window starts on the last input row and reaches past the end pad.
    # (pads whose ceil_mode window would start in the end pad are avoided: onnx shape inference
    # keeps that window, onnxruntime drops it, so the analysed shape is wrong; see the report.)
    t = n.op("MaxPool", [t], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 1], ceil_mode=1)   # [1,5,5,4]
    t = n.op("LeakyRelu", [t], alpha=0.2)
    t = n.conv(t, 5, 4, 1)
    t = n.op("MaxPool", [t], kernel_shape=[2, 2], dilations=[2, 2], pads=[1, 1, 1, 1])
    t = n.op("GlobalMaxPool", [t])
    t = n.op("Flatten", [t], axis=1)
    return n.case("max_pools", t, [0, 3])


def avg_pools() -> Case:
    """AveragePool: count_include_pad 0 and 1, padded, ceil_mode; ReduceMean over H,W (keepdims 1)."""
    n = Net((1, 3, 15, 15), seed=16)
    t = n.op("Tanh", [n.conv("x", 3, 4, 3)])                                # [1,4,13,13]
    t = n.op("AveragePool", [t], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=0)
    t = n.conv(t, 4, 4, 1)
    t = n.op("AveragePool", [t], kernel_shape=[3, 2], strides=[1, 2], pads=[1, 0, 1, 1], count_include_pad=1)
    t = n.op("Sigmoid", [t])
    t = n.op("AveragePool", [t], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)
    t = n.conv(t, 4, 4, 1)
    t = n.op("ReduceMean", [t], axes=[2, 3], keepdims=1)                    # [1,4,1,1]
    t = n.conv(t, 4, 3, 1)
    return n.case("avg_pools", t, [0, 2])


def classifier() -> Case:
    """BatchNormalization, LRN, Dropout, Identity, Cast, Flatten, Gemm (transB=1; alpha, beta,
    transB=0): a ZF-like net down to 2-D logits."""
    n = Net((1, 3, 14, 14), seed=17)
    t = n.conv("x", 3, 6, 3, strides=[2, 2])                                # [1,6,6,6]
    t = n.op("BatchNormalization", [t, n.randn((6,), 1.0), n.randn((6,), 0.5), n.randn((6,), 0.3),
                                    n.const(n.rng.uniform(0.5, 2.0, 6))], epsilon=1e-3)
    t = n.op("Relu", [t])
    t = n.op("LRN", [t], size=3, alpha=0.9, beta=0.75, bias=1.5)
    t = n.op("MaxPool", [t], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])   # [1,6,3,3]
    t = n.op("Dropout", [t])
    t = n.op("Identity", [t])
    t = n.op("Cast", [t], to=FLOAT)
    t = n.op("Flatten", [t])                                                # [1,54]
    t = n.op("Gemm", [t, n.randn((10, 54), 0.3), n.randn((10,), 0.1)], transB=1)
    t = n.op("Relu", [t])
    t = n.op("Gemm", [t, n.randn((10, 4), 0.5), n.randn((1, 4), 0.1)], alpha=0.7, beta=0.3, transA=0, transB=0)
    return n.case("classifier", t, [0, 3])


def lrn_backprop() -> Case:
    """LRN with sizes 5 and 3 and a strong alpha, on signed input, to a 4-D target."""
    n = Net((1, 3, 12, 12), seed=18)
    t = n.conv("x", 3, 6, 3, pads=[1, 1, 1, 1])
    t = n.op("LRN", [t], size=5, alpha=2.0, beta=0.75, bias=1.0)
    t = n.conv(t, 6, 4, 3, strides=[2, 2])
    t = n.op("LRN", [t], size=3, alpha=1.0, beta=0.5, bias=2.0)
    return n.case("lrn_backprop", t, [0, 3])


def reshapes_matmul() -> Case:
    """Reshape, Transpose, MatMul (constant and of two tensors), Squeeze, Unsqueeze, ReduceMean
    (keepdims 0), GlobalAveragePool: a tiny attention block down to 2-D."""
    n = Net((1, 3, 12, 12), seed=19)
    t = n.op("Relu", [n.conv("x", 3, 4, 3, strides=[2, 2], pads=[1, 1, 1, 1])])   # [1,4,6,6]
    tok = n.op("Transpose", [n.op("Reshape", [t, n.ints([1, 4, 36])])], perm=[0, 2, 1])  # [1,36,4]
    q = n.op("MatMul", [tok, n.randn((4, 4), 0.5)])
    k = n.op("MatMul", [tok, n.randn((4, 4), 0.5)])
    att = n.op("MatMul", [q, n.op("Transpose", [k], perm=[0, 2, 1])])        # [1,36,36] two tensors
    mixed = n.op("MatMul", [n.op("Tanh", [att]), tok])                       # [1,36,4]
    img = n.op("Reshape", [n.op("Transpose", [mixed], perm=[0, 2, 1]), n.ints([1, 4, 6, 6])])
    img = n.op("Add", [img, t])
    pooled = n.op("Squeeze", [n.op("GlobalAveragePool", [img]), n.ints([3])])      # [1,4,1]
    pooled = n.op("Unsqueeze", [pooled, n.ints([3])])                               # [1,4,1,1]
    g = n.op("Mul", [img, n.op("Sigmoid", [pooled])])
    m = n.op("ReduceMean", [g], axes=[2, 3], keepdims=0)                     # [1,4]
    m2 = n.op("ReduceMean", [n.op("Mul", [g, g])], axes=[-1, -2], keepdims=0)
    out = n.op("Concat", [m, m2], axis=1)                                    # [1,8]
    out = n.op("Gemm", [out, n.randn((8, 3), 0.5)])
    return n.case("reshapes_matmul", out, [0, 2])


def resizes() -> Case:
    """Resize nearest (half_pixel / round_prefer_floor, asymmetric / floor), linear (half_pixel,
    asymmetric, align_corners), a size-given downscale."""
    n = Net((1, 3, 12, 12), seed=20)
    t = n.op("Relu", [n.conv("x", 3, 4, 3, strides=[2, 2], pads=[1, 1, 1, 1])])   # [1,4,6,6]
    sc = n.const([1.0, 1.0, 2.0, 2.0])
    a = n.op("Resize", [t, "", sc], mode="nearest")                          # [1,4,12,12]
    b = n.op("Resize", [t, "", sc], mode="linear")
    c = n.op("Resize", [t, "", sc], mode="linear", coordinate_transformation_mode="asymmetric")
    d = n.op("Resize", [t, "", sc], mode="linear", coordinate_transformation_mode="align_corners")
    e = n.op("Resize", [t, "", n.const([1.0, 1.0, 2.0, 3.0])], mode="nearest",
             coordinate_transformation_mode="asymmetric", nearest_mode="floor")   # [1,4,12,18]
    e = n.op("Resize", [e, "", "", n.ints([1, 4, 12, 12])], mode="linear")     # downscale by sizes
    t = n.op("Concat", [a, b, c, d, e], axis=1)                              # [1,20,12,12]
    t = n.op("Relu", [n.conv(t, 20, 4, 3, strides=[2, 2])])
    return n.case("resizes", t, [1, 3])


def upsample_opset9() -> Case:
    """Upsample (opset 9), nearest and linear; Slice with attributes."""
    n = Net((1, 3, 12, 12), seed=21, opset=9)
    t = n.op("Relu", [n.conv("x", 3, 4, 3, strides=[2, 2], pads=[1, 1, 1, 1])])   # [1,4,6,6]
    a = n.op("Upsample", [t, n.const([1.0, 1.0, 2.0, 2.0])], mode="nearest")
    b = n.op("Upsample", [t, n.const([1.0, 1.0, 2.0, 3.0])], mode="linear")
    b = n.op("Slice", [b], starts=[0], ends=[12], axes=[3])                 # opset-9 Slice: attributes
    t = n.op("Relu", [n.conv(n.op("Concat", [a, b], axis=1), 8, 4, 3, strides=[2, 2])])
    return n.case("upsample_opset9", t, [0, 3])


def transform_input() -> Case:
    """GoogLeNet / Inception v3 transform_input as TorchScript writes it: x[:, c] is Gather(axis 1,
    scalar index) → Unsqueeze → Mul → Add, the three concatenated; a Gather with repeated and
    negative 1-D indices; x.view(x.size(0), -1), whose shape comes from a Shape → Gather →
    Unsqueeze → Concat subgraph (integer tensors, no signal)."""
    n = Net((1, 3, 12, 12), seed=22)
    chans = []
    for c, (scale, shift) in enumerate([(0.229 / 0.5, (0.485 - 0.5) / 0.5), (0.224 / 0.5, (0.456 - 0.5) / 0.5),
                                        (0.225 / 0.5, (0.406 - 0.5) / 0.5)]):
        g = n.op("Gather", ["x", n.const(c, np.int64, "idx")], axis=1)             # [1,12,12]
        g = n.op("Unsqueeze", [g, n.ints([1])])
        chans.append(n.op("Add", [n.op("Mul", [g, n.const(scale)]), n.const(shift)]))
    t = n.op("Concat", chans, axis=1)
    t = n.op("Relu", [n.conv(t, 3, 4, 3, strides=[2, 2], pads=[1, 1, 1, 1])])         # [1,4,6,6]
    t = n.op("Gather", [t, n.ints([3, 0, -1, 1, 0])], axis=1)                         # [1,5,6,6]
    t = n.op("MaxPool", [n.conv(t, 5, 4, 3, pads=[1, 1, 1, 1])], kernel_shape=[2, 2], strides=[2, 2])
    batch = n.op("Unsqueeze", [n.op("Gather", [n.op("Shape", [t]), n.const(0, np.int64, "idx")], axis=0), n.ints([0])])
    flat = n.op("Reshape", [t, n.op("Concat", [batch, n.ints([-1])], axis=0)])        # [1,36]
    t = n.op("Gather", [n.op("Relu", [flat]), n.ints([[0, 5], [35, 5]])], axis=1)     # [1,2,2]: 2-D indices
    t = n.op("Gemm", [n.op("Flatten", [t]), n.randn((3, 4), 0.5)], transB=1)
    return n.case("transform_input", t, [0, 2])


def computed_constants() -> Case:
    """Values the graph computes from shapes or constants, as TorchScript writes them: chunk as
    Slices whose starts/ends come from Shape → Gather → Add → Div → Mul, clamp(x, 0, 6) as Clip
    with Cast(Constant) bounds, TF-style "same" padding as a Pad whose pads come from a Shape
    subgraph, a Reshape of a channel shuffle whose shape is computed."""
    n = Net((1, 3, 13, 13), seed=23)
    t = n.op("Relu", [n.conv("x", 3, 8, 3, pads=[1, 1, 1, 1])])                      # [1,8,13,13]
    c = n.op("Gather", [n.op("Shape", [t]), n.ints([1])], axis=0)                     # [8]
    half = n.op("Div", [n.op("Add", [c, n.ints([1])]), n.ints([2])])                  # (8 + 1) // 2 = 4
    a = n.op("Slice", [t, n.ints([0]), n.op("Mul", [half, n.ints([1])]), n.ints([1])])
    b = n.op("Slice", [t, n.op("Mul", [half, n.ints([1])]), n.op("Mul", [half, n.ints([2])]), n.ints([1])])
    lo = n.op("Cast", [n.op("Constant", [], value=numpy_helper.from_array(np.array(0, np.int64)))], to=FLOAT)
    hi = n.op("Cast", [n.op("Constant", [], value=numpy_helper.from_array(np.array(6, np.int64)))], to=FLOAT)
    b = n.op("Clip", [n.conv(b, 4, 4, 3, pads=[1, 1, 1, 1], gain=4.0), lo, hi])       # ReLU6, some > 6
    # "same" padding for a 3x3 stride-2 conv: total = max((ceil(H/2) − 1)·2 + 3 − H, 0), split low/high
    h = n.op("Gather", [n.op("Shape", [b]), n.ints([2])], axis=0)
    total = n.op("Sub", [n.op("Add", [n.op("Mul", [n.op("Sub", [n.op("Div", [n.op("Add", [h, n.ints([1])]), n.ints([2])]),
                                                                 n.ints([1])]), n.ints([2])]), n.ints([3])]), h])
    low = n.op("Div", [total, n.ints([2])])
    pads = n.op("Concat", [n.ints([0, 0]), low, low, n.ints([0, 0]), n.op("Sub", [total, low]), n.op("Sub", [total, low])], axis=0)
    b = n.conv(n.op("Pad", [b, pads]), 4, 4, 3, strides=[2, 2])                        # [1,4,7,7]
    a = n.conv(a, 4, 4, 3, strides=[2, 2], pads=[1, 1, 1, 1])                         # [1,4,7,7]
    t = n.op("Concat", [a, b], axis=1)
    shape = n.op("Concat", [n.op("Gather", [n.op("Shape", [t]), n.ints([0])], axis=0), n.ints([2, 4, 7, 7])], axis=0)
    t = n.op("Reshape", [n.op("Transpose", [n.op("Reshape", [t, shape])], perm=[0, 2, 1, 3, 4]), n.ints([1, 8, 7, 7])])
    t = n.op("Relu", [n.conv(t, 8, 5, 3, strides=[2, 2])])
    return n.case("computed_constants", t, [0, 4])


def _convnext_block(n: Net, t: str, c: int, gelu) -> str:
    """ConvNeXt's CNBlock: depthwise 7x7 → NHWC → LayerNorm(C) → Linear(4C) → GELU → Linear(C) →
    layer scale → NCHW → residual."""
    h = n.conv(t, c, c, 7, group=c, pads=[3, 3, 3, 3])
    h = n.op("Transpose", [h], perm=[0, 2, 3, 1])
    outs = 3 if n.opset >= 18 else 1  # the dynamo exporter writes (and leaves unused) Mean and InvStdDev
    h = n.op("LayerNormalization", [h, n.const(1 + 0.3 * n.rng.standard_normal(c)), n.randn((c,), 0.2)],
             n_out=outs, axis=-1, epsilon=1e-6)
    h = h[0] if outs > 1 else h
    h = n.op("Add", [n.op("MatMul", [h, n.randn((c, 4 * c), 1 / np.sqrt(c))]), n.randn((4 * c,), 0.2)])
    h = gelu(h)
    h = n.op("Add", [n.op("MatMul", [h, n.randn((4 * c, c), 1 / np.sqrt(4 * c))]), n.randn((c,), 0.2)])
    h = n.op("Mul", [h, n.const(0.5 + n.rng.uniform(0, 1, c))])                        # layer scale
    h = n.op("Transpose", [h], perm=[0, 3, 1, 2])
    return n.op("Add", [t, h])


def convnext_torchscript() -> Case:
    """A ConvNeXt stem and block as the TorchScript exporter writes them (opset 17): GELU as
    Div(√2) → Erf → Add(1) → Mul(x) → Mul(0.5)."""
    n = Net((1, 3, 12, 12), seed=24)
    t = n.conv("x", 3, 6, 2, strides=[2, 2])                                         # [1,6,6,6]

    def gelu(h):
        e = n.op("Erf", [n.op("Div", [h, n.const(np.sqrt(2.0))])])
        return n.op("Mul", [n.op("Mul", [h, n.op("Add", [e, n.const(1.0)])]), n.const(0.5)])

    t = _convnext_block(n, t, 6, gelu)
    return n.case("convnext_torchscript", t, [0, 5])


def convnext_dynamo() -> Case:
    """The same block as the dynamo exporter writes it (opset 20): Gelu (exact and tanh),
    LayerNormalization with three outputs, Split with num_outputs, ReduceMean and Pad with axes
    as inputs (opset 18)."""
    n = Net((1, 3, 12, 12), seed=25, opset=20)
    t = n.conv("x", 3, 6, 2, strides=[2, 2])                                         # [1,6,6,6]
    t = _convnext_block(n, t, 6, lambda h: n.op("Gelu", [h]))
    t = _convnext_block(n, t, 6, lambda h: n.op("Gelu", [h], approximate="tanh"))
    p, q = n.op("Split", [t], n_out=2, axis=1, num_outputs=2)                        # [1,3,6,6] each
    q = n.op("Pad", [q, n.ints([1, 0, 0, 2]), n.const(0.0), n.ints([2, -1])])        # H +1 above, W +2 at the end
    q = n.conv(q, 3, 3, 2, strides=[1, 2], pads=[0, 0, 0, 1])                        # [1,3,6,4]
    m = n.op("ReduceMean", [p, n.ints([2, 3])], keepdims=1)                           # [1,3,1,1]
    t = n.op("Concat", [n.op("Mul", [p, m]), n.op("Resize", [q, "", "", n.ints([1, 3, 6, 6])], mode="linear")], axis=1)
    return n.case("convnext_dynamo", t, [0, 4])


def strided_slices() -> Case:
    """Slice with steps: YOLOv5's Focus (x[..., ::2, ::2] and its three siblings, concatenated),
    a flip (x[..., ::-1], steps −1 from −1 to −∞) and steps on two axes at once."""
    n = Net((1, 3, 12, 10), seed=26)
    big = np.iinfo(np.int64).max
    parts = [n.op("Slice", ["x", n.ints([r, c]), n.ints([big, big]), n.ints([2, 3]), n.ints([2, 2])])
             for r, c in [(0, 0), (1, 0), (0, 1), (1, 1)]]                          # [1,3,6,5] each
    t = n.op("Relu", [n.conv(n.op("Concat", parts, axis=1), 12, 6, 3, pads=[1, 1, 1, 1])])   # [1,6,6,5]
    f = n.op("Slice", [t, n.ints([-1]), n.ints([-big]), n.ints([3]), n.ints([-1])])  # flipped left-right
    t = n.op("Add", [t, n.op("Mul", [f, n.const(0.5)])])
    t = n.op("Slice", [t, n.ints([5, 1]), n.ints([-big, 6]), n.ints([1, 2]), n.ints([-2, 3])])  # channels 5,3,1; rows 1,4
    t = n.op("Relu", [n.conv(t, 3, 4, 1)])                                            # [1,4,2,5]
    return n.case("strided_slices", t, [0, 3])


def flattened_gather() -> Case:
    """The dynamo exporter's as_strided (ConvNeXt's head): a [1, C, 1, 1] tensor flattened to 1-D,
    then Gather(axis 0) with indices shaped [1, C, 1, 1]; here with a permutation and a repeat."""
    n = Net((1, 3, 8, 8), seed=27)
    t = n.op("Relu", [n.conv("x", 3, 5, 3, strides=[2, 2])])                          # [1,5,3,3]
    t = n.op("ReduceMean", [t], axes=[2, 3], keepdims=1)                               # [1,5,1,1]
    flat = n.op("Reshape", [t, n.ints([-1])])                                          # [5]
    t = n.op("Gather", [flat, n.ints(np.array([4, 0, 1, 1, 3, 2]).reshape(1, 6, 1, 1))], axis=0)   # [1,6,1,1]
    t = n.conv(t, 6, 4, 1)
    return n.case("flattened_gather", t, [0, 3])


def structural_copies() -> Case:
    """Pad in reflect and edge mode, DepthToSpace, SpaceToDepth, Tile, Trilu, Expand (issue 16)."""
    n = Net((1, 3, 8, 8), seed=40)
    t = n.op("Relu", [n.conv("x", 3, 8, 3, pads=[1, 1, 1, 1])])                        # [1,8,8,8]
    t = n.op("Pad", [t, n.ints([0, 0, 1, 2, 0, 0, 2, 1])], mode="reflect")              # [1,8,11,11]
    t = n.op("DepthToSpace", [t], blocksize=2, mode="CRD")                              # [1,2,22,22]
    t = n.conv(t, 2, 4, 3, strides=[2, 2])                                              # [1,4,10,10]
    t = n.op("Tile", [n.op("SpaceToDepth", [t], blocksize=2), n.ints([1, 1, 2, 1])])    # [1,16,10,5]
    t = n.op("Trilu", [t, n.ints(1)], upper=1)
    m = n.op("ReduceMean", [t], axes=[2, 3], keepdims=1)                                # [1,16,1,1]
    t = n.op("Add", [t, n.op("Expand", [m, n.ints([1, 16, 10, 5])])])
    t = n.op("Pad", [t, n.ints([0, 0, 0, 1, 0, 0, 1, 0])], mode="edge")                 # [1,16,11,6]
    return n.case("structural_copies", n.conv(t, 16, 4, 3), [0, 3])


def pointwise_ops() -> Case:
    """The unary elementwise ops, Mean/Max/Min of several inputs, Where, Pow and Mod of two computed
    operands, CastLike (opset 18, for Mish; issue 16)."""
    n = Net((1, 3, 8, 8), seed=41, opset=18)
    t = n.conv("x", 3, 4, 3, pads=[1, 1, 1, 1], gain=1.5)                             # [1,4,8,8]
    u = n.op("Sigmoid", [t])
    s = n.op("Mul", [u, n.const(0.8)])                                                 # (0, 0.8)
    p = n.op("Add", [u, n.const(0.5)])                                                 # (0.5, 1.5)
    a = n.op("Mean", [n.op("Acos", [s]), n.op("Atanh", [s])])
    b = n.op("Max", [n.op("Acosh", [n.op("Add", [u, n.const(1.2)])]), n.op("Asinh", [t]), n.op("Atan", [t])])
    c = n.op("Min", [n.op("Cos", [t]), n.op("Sin", [t]), n.op("Tan", [u])])
    d = n.op("Mean", [n.op("Sinh", [t]), n.op("Cosh", [t]), n.op("Exp", [n.op("Neg", [t])]), n.op("Log", [p]),
                      n.op("Reciprocal", [p]), n.op("Sqrt", [p]), n.op("Softplus", [t]), n.op("Softsign", [t])])
    e = n.op("Mean", [n.op("Elu", [t], alpha=0.7), n.op("Selu", [t]), n.op("Celu", [t], alpha=0.5), n.op("Mish", [t]),
                      n.op("Shrink", [t], lambd=0.3, bias=0.1), n.op("ThresholdedRelu", [t], alpha=0.2),
                      n.op("Abs", [t]), n.op("Asin", [s])])
    f = n.op("Where", [n.op("Greater", [t, n.const(0.0)]), a, b])
    g = n.op("Pow", [p, c])
    h = n.op("Mod", [n.op("Softsign", [t]), n.op("Add", [u, n.const(1.0)])], fmod=1)
    t = n.op("Sum", [f, g, h, e, n.op("CastLike", [d, t])])
    return n.case("pointwise_ops", n.conv(t, 4, 4, 3), [0, 3])


def softmax_reductions() -> Case:
    """Softmax, LogSoftmax and every Reduce* op but ReduceMean, axes as an input (opset 18), keepdims
    0 and 1 (issue 16; older opsets in test_reverse_pointwise.py)."""
    n = Net((1, 3, 8, 8), seed=42, opset=18)
    t = n.conv("x", 3, 4, 3, pads=[1, 1, 1, 1])                                       # [1,4,8,8]
    pos = n.op("Add", [n.op("Mul", [n.op("Sigmoid", [t]), n.const(0.5)]), n.const(0.75)])   # (0.75, 1.25)
    parts = [
        n.op("Softmax", [t], axis=1), n.op("LogSoftmax", [t], axis=-1),
        n.op("ReduceSum", [t, n.ints([2])], keepdims=1),                                # [1,4,1,8]
        n.op("Reshape", [n.op("ReduceL2", [t, n.ints([3])], keepdims=0), n.ints([1, 4, 8, 1])]),
        n.op("ReduceLogSumExp", [t, n.ints([2, 3])]),                                   # [1,4,1,1]
        n.op("ReduceMax", [t, n.ints([1])]), n.op("ReduceMin", [t, n.ints([-3])]),      # [1,1,8,8]
        n.op("ReduceL1", [t, n.ints([3])]), n.op("ReduceSumSquare", [t, n.ints([2])]),
        n.op("ReduceLogSum", [pos, n.ints([2])]), n.op("ReduceProd", [pos, n.ints([3])]),
    ]
    t = n.op("Sum", parts)
    return n.case("softmax_reductions", n.conv(t, 4, 4, 3, gain=0.5), [0, 3])


def structural_gathers() -> Case:
    """TopK, GatherElements (stored and ArgMax indices), GatherND, ScatterElements and ScatterND
    with signals on data and updates (issue 16)."""
    n = Net((1, 3, 8, 8), seed=41)
    t = n.op("Relu", [n.conv("x", 3, 6, 3, pads=[1, 1, 1, 1])])                         # [1,6,8,8]
    v = n.op("TopK", [t, n.ints([5])], n_out=2, axis=3)[0]                              # [1,6,8,5]
    t = n.op("GatherElements", [v, n.ints(n.rng.integers(-8, 8, (1, 6, 4, 5)))], axis=2)   # [1,6,4,5]
    t = n.op("Add", [t, n.op("GatherElements", [t, n.op("ArgMax", [t], axis=1, keepdims=1)], axis=1)])
    t = n.op("GatherND", [t, n.ints([[[0, 1], [0, 4], [0, 1]]])])                      # [1,3,4,5]
    idx = np.stack([n.rng.permutation(4)[:2] for _ in range(15)]).reshape(3, 5, 2).transpose(0, 2, 1)[None]
    u = n.conv(t, 3, 3, (3, 1), strides=[2, 1], pads=[1, 0, 0, 0])                      # [1,3,2,5]
    t = n.op("ScatterElements", [t, n.ints(idx), u], axis=2)
    t = n.op("ScatterND", [t, n.ints([[[0, 1], [0, 2]]]), n.conv(t, 3, 2, 1)], reduction="add")
    # Compress: the analysis cannot size its output (it depends on the condition's values), so it
    # stays off the projected path here; test_reverse_structural.py checks its rule with the size given
    n.op("Compress", [t, n.const([1, 0, 1, 1], np.bool_)], axis=2)
    return n.case("structural_gathers", n.conv(t, 3, 4, 3, pads=[1, 1, 1, 1]), [0, 2])


def structural_norms_products() -> Case:
    """Instance, Group (opset 18: per-group scale) and LpNormalization, LpPool, GlobalLpPool, Einsum
    of two variable operands (attention), MatMul of two variable operands (issue 16)."""
    n = Net((1, 4, 8, 8), seed=42, opset=18)
    t = n.conv("x", 4, 6, 3, pads=[1, 1, 1, 1])                                         # [1,6,8,8]
    t = n.op("InstanceNormalization", [t, n.const(n.rng.uniform(0.5, 2, 6)), n.randn((6,))], epsilon=1e-3)
    t = n.op("Relu", [t])
    t = n.op("GroupNormalization", [t, n.const(n.rng.uniform(0.5, 2, 2)), n.randn((2,))], num_groups=2, epsilon=1e-3)
    t = n.op("LpPool", [t], kernel_shape=[2, 2], strides=[2, 2], p=2)                    # [1,6,4,4]
    t = n.op("Mul", [t, n.op("GlobalLpPool", [t], p=3)])
    q = n.op("Reshape", [t, n.ints([1, 6, 16])])
    att = n.op("Einsum", [q, n.op("Tanh", [q])], equation="bci,bdi->bcd")               # [1,6,6]
    q = n.op("Einsum", [att, q], equation="bcd,bdi->bci")                               # [1,6,16]
    q = n.op("MatMul", [n.op("LpNormalization", [q], axis=2, p=2), n.op("Transpose", [q], perm=[0, 2, 1])])   # [1,6,6]
    t = n.op("Reshape", [q, n.ints([1, 6, 6, 1])])
    # QuantizeLinear/DequantizeLinear pass their signal straight through the rounding, which is not
    # the gradient: off the projected path here, checked in test_reverse_structural.py
    n.op("DequantizeLinear", [n.op("QuantizeLinear", [t, n.const(0.1)]), n.const(0.1)])
    # so do dynamic quantization's ops (checked in test_reverse_dynamic_quant.py)
    tq, _, tz = n.op("DynamicQuantizeLinear", [t], n_out=3)
    n.op("ConvInteger", [tq, n.const(np.arange(12).reshape(2, 6, 1, 1), np.uint8), tz])
    n.op("MatMulInteger", [tq, n.const([[1, 2, 3]], np.uint8), tz])
    return n.case("structural_norms_products", n.conv(t, 6, 4, (3, 1), pads=[1, 0, 1, 0]), [0, 3])


def scans() -> Case:
    """CumSum (exclusive, reverse), CumProd, ReverseSequence, Det of 2×2 blocks (opset 26; issue 16)."""
    n = Net((1, 3, 8, 8), seed=43, opset=26)
    t = n.conv("x", 3, 4, 3, pads=[1, 1, 1, 1])                                       # [1,4,8,8]
    t = n.op("ReverseSequence", [t, n.ints([3])], batch_axis=0, time_axis=1)
    t = n.op("CumSum", [t, n.ints(2)], exclusive=1, reverse=1)
    pos = n.op("Add", [n.op("Mul", [n.op("Sigmoid", [t]), n.const(0.5)]), n.const(0.75)])   # (0.75, 1.25)
    t = n.op("Add", [t, n.op("CumProd", [pos, n.ints(3)])])
    d = n.op("Det", [n.op("Reshape", [t, n.ints([1, 4, 16, 2, 2])])])                  # [1,4,16]
    t = n.op("Add", [n.conv(t, 4, 4, 3, strides=[2, 2], pads=[1, 1, 1, 1]), n.op("Reshape", [d, n.ints([1, 4, 4, 4])])])
    return n.case("scans", n.conv(t, 4, 4, 3), [0, 3])


def norms_swish() -> Case:
    """MeanVarianceNormalization, Swish, RMSNormalization, CenterCropPad (opset 24: onnxruntime
    1.32 runs Swish's function body there, not at 26; issue 16)."""
    n = Net((1, 3, 8, 8), seed=44, opset=24)
    t = n.conv("x", 3, 4, 3, pads=[1, 1, 1, 1])                                       # [1,4,8,8]
    t = n.op("MeanVarianceNormalization", [t], axes=[2, 3])
    t = n.op("Swish", [n.conv(t, 4, 4, 1)], alpha=1.5)
    t = n.op("RMSNormalization", [t, n.const(n.rng.uniform(0.5, 2, (8, 8)))], axis=2, epsilon=1e-3)
    t = n.op("CenterCropPad", [t, n.ints([6, 10])], axes=[2, 3])                        # [1,4,6,10]
    return n.case("norms_swish", n.conv(t, 4, 4, 3), [0, 3])


def recurrent_crnn() -> Case:
    """A CRNN's recurrent head: conv columns as a sequence (Squeeze, Transpose) through a
    bidirectional LSTM with peepholes, a GRU (linear_before_reset) and a reverse RNN. The sequence
    axis is the first, which the recurrence mixes: one signal per run (one channel)."""
    n = Net((1, 3, 4, 8), seed=44)
    t = n.conv("x", 3, 4, (4, 3), pads=[0, 1, 0, 1])                                   # [1,4,1,8]
    t = n.op("Transpose", [n.op("Squeeze", [t, n.ints([2])])], perm=[2, 0, 1])          # [8,1,4]

    def rnn(op, x, n_in, hidden, gates, direction="forward", peep=False, **attrs):
        d = 2 if direction == "bidirectional" else 1
        ins = [x, n.randn((d, gates * hidden, n_in), 0.5), n.randn((d, gates * hidden, hidden), 0.5),
               n.randn((d, 2 * gates * hidden), 0.2)]
        if peep:
            ins += ["", "", "", n.randn((d, 3 * hidden), 0.3)]
        return n.op(op, ins, hidden_size=hidden, direction=direction, **attrs)

    t = rnn("LSTM", t, 4, 3, 4, "bidirectional", peep=True)                             # [8,2,1,3]
    t = n.op("Reshape", [n.op("Transpose", [t], perm=[0, 2, 1, 3]), n.ints([8, 1, 6])])   # [8,1,6]
    t = n.op("Squeeze", [rnn("GRU", t, 6, 4, 3, linear_before_reset=1), n.ints([1])])      # [8,1,4]
    t = rnn("RNN", t, 4, 3, 1, "reverse")                                               # [8,1,1,3]
    return n.case("recurrent_crnn", n.op("Transpose", [t], perm=[2, 3, 1, 0]), [0])      # [1,3,1,8]


CASES = {
    f.__name__: f
    for f in (conv_geometry, conv_transpose, smooth_activations, residual, routing, max_pools, avg_pools,
              classifier, lrn_backprop, reshapes_matmul, resizes, upsample_opset9, transform_input,
              computed_constants, convnext_torchscript, convnext_dynamo, strided_slices, flattened_gather,
              structural_copies, pointwise_ops, softmax_reductions, structural_gathers,
              structural_norms_products, scans, norms_swish, recurrent_crnn)
}


# ---------------------------------------------------------------- chain models for the numpy reference


def chain_model(layers: list[dict], input_shape, opset: int = 17) -> tuple[onnx.ModelProto, str]:
    """An ONNX model of a chain of layers as numpy_deconv.py describes them; returns (model, last tensor).

    The newer layers are written as PyTorch's exporters write them: "pick" as TorchScript's
    transform_input (Gather → Unsqueeze → Mul → Add → Concat), "chunk" as a Slice whose bounds
    come from a Shape subgraph, "clip" with Cast(Constant) bounds, "layernorm" over channels as
    Transpose → LayerNormalization → Transpose, "gelu" as Gelu from opset 20, else as Erf."""
    nodes, inits, t = [], [], "x"

    def add(op, ins, hint, **attrs):
        name = f"{hint}_{len(nodes)}"
        nodes.append(helper.make_node(op, ins, [name], **attrs))
        return name

    def const(value, hint, dtype=np.float32):
        name = f"{hint}_{len(inits)}"
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    for i, L in enumerate(layers):
        kind, out = L["op"], f"t{i}"
        if kind == "conv":
            inits += [numpy_helper.from_array(L["W"], f"W{i}"), numpy_helper.from_array(L["B"], f"B{i}")]
            nodes.append(helper.make_node("Conv", [t, f"W{i}", f"B{i}"], [out], strides=list(L["strides"]),
                                          pads=list(L["pads"]), dilations=list(L.get("dilations", (1, 1))),
                                          group=int(L.get("group", 1))))
        elif kind == "pick":
            picked = []
            for c, sc, sh in zip(L["source"], L["scale"], L["shift"]):
                g = add("Unsqueeze", [add("Gather", [t, const(c, "idx", np.int64)], "gather", axis=1), const([1], "ax", np.int64)], "unsq")
                picked.append(add("Add", [add("Mul", [g, const(sc, "scale")], "mul"), const(sh, "shift")], "add"))
            nodes.append(helper.make_node("Concat", picked, [out], axis=1))
        elif kind == "chunk":
            c = add("Gather", [add("Shape", [t], "shape"), const([1], "i", np.int64)], "dim", axis=0)
            half = add("Div", [add("Add", [c, const([1], "one", np.int64)], "add"), const([2], "two", np.int64)], "half")
            lo = add("Mul", [half, const([L["index"]], "k", np.int64)], "start")
            hi = add("Mul", [half, const([L["index"] + 1], "k", np.int64)], "end")
            nodes.append(helper.make_node("Slice", [t, lo, hi, const([1], "axis", np.int64)], [out]))
        elif kind == "clip":
            bounds = [add("Cast", [add("Constant", [], "k", value=numpy_helper.from_array(np.array(v, np.int64)))], "cast",
                          to=FLOAT) for v in (L["min"], L["max"])]
            nodes.append(helper.make_node("Clip", [t, *bounds], [out]))
        elif kind == "layernorm":
            nhwc = add("Transpose", [t], "nhwc", perm=[0, 2, 3, 1])
            ln = add("LayerNormalization", [nhwc, const(L["gamma"], "gamma"), const(L["beta"], "beta")], "ln",
                     axis=-1, epsilon=float(L["eps"]))
            nodes.append(helper.make_node("Transpose", [ln], [out], perm=[0, 3, 1, 2]))
        elif kind == "gelu":
            if opset >= 20:
                nodes.append(helper.make_node("Gelu", [t], [out], approximate=L["approximate"]))
            elif L["approximate"] == "none":
                e = add("Erf", [add("Div", [t, const(np.sqrt(2.0), "sqrt2")], "div")], "erf")
                half = add("Mul", [t, add("Add", [e, const(1.0, "one")], "add")], "mul")
                nodes.append(helper.make_node("Mul", [half, const(0.5, "half")], [out]))
            else:
                raise ValueError("the tanh GELU needs opset 20")
        elif kind == "relu":
            nodes.append(helper.make_node("Relu", [t], [out]))
        elif kind == "maxpool":
            nodes.append(helper.make_node("MaxPool", [t], [out], kernel_shape=list(L["kernel"]), strides=list(L["strides"]),
                                          pads=list(L["pads"]), ceil_mode=int(L.get("ceil_mode", 0))))
        elif kind == "avgpool":
            nodes.append(helper.make_node("AveragePool", [t], [out], kernel_shape=list(L["kernel"]), strides=list(L["strides"]),
                                          pads=list(L["pads"]), count_include_pad=int(L["count_include_pad"])))
        elif kind == "lrn":
            nodes.append(helper.make_node("LRN", [t], [out], size=L["size"], alpha=L["alpha"], beta=L["beta"], bias=L["bias"]))
        elif kind == "flatten":
            nodes.append(helper.make_node("Flatten", [t], [out], axis=1))
        elif kind == "gemm":
            inits += [numpy_helper.from_array(L["W"], f"W{i}"), numpy_helper.from_array(L["B"], f"B{i}")]
            nodes.append(helper.make_node("Gemm", [t, f"W{i}", f"B{i}"], [out], transB=1))
        else:
            raise ValueError(kind)
        t = out
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", FLOAT, list(input_shape))],
                              [helper.make_tensor_value_info(t, FLOAT, None)], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="cnncli-tests")
    m.ir_version = _ir_version(opset)
    onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)  # fails on a malformed model
    return m, t


def _conv_layer(rng, cin, cout, k, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), gain=1.0):
    w = (gain * np.sqrt(2.0 / (cin * k * k)) * rng.standard_normal((cout, cin, k, k))).astype(np.float32)
    b = (0.1 * rng.standard_normal(cout)).astype(np.float32)
    return {"op": "conv", "W": w, "B": b, "strides": strides, "pads": pads, "dilations": dilations}


def chain_zf(seed: int = 30) -> tuple[list[dict], tuple]:
    """ZF-like: conv/2 → relu → maxpool 3x3/2 (overlapping) → lrn → conv → relu → maxpool padded ceil."""
    rng = np.random.default_rng(seed)
    layers = [
        _conv_layer(rng, 3, 5, 3, strides=(2, 2), pads=(1, 0, 1, 1)),
        {"op": "relu"},
        {"op": "maxpool", "kernel": (3, 3), "strides": (2, 2), "pads": (0, 0, 0, 0)},
        {"op": "lrn", "size": 3, "alpha": 0.5, "beta": 0.75, "bias": 1.0},
        _conv_layer(rng, 5, 6, 3, pads=(1, 1, 1, 1), dilations=(1, 2)),
        {"op": "relu"},
        {"op": "maxpool", "kernel": (2, 2), "strides": (2, 2), "pads": (1, 1, 0, 0), "ceil_mode": 1},
    ]
    return layers, (1, 3, 20, 20)


def chain_classifier(seed: int = 31) -> tuple[list[dict], tuple]:
    """conv → relu → avgpool (count_include_pad 0) → conv → relu → avgpool (1) → flatten → gemm → relu → gemm."""
    rng = np.random.default_rng(seed)
    layers = [
        _conv_layer(rng, 3, 4, 3),
        {"op": "relu"},
        {"op": "avgpool", "kernel": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1), "count_include_pad": 0},
        _conv_layer(rng, 4, 5, 3, strides=(1, 1), pads=(1, 1, 1, 1)),
        {"op": "relu"},
        {"op": "avgpool", "kernel": (2, 3), "strides": (2, 2), "pads": (0, 1, 1, 0), "count_include_pad": 1},
        {"op": "flatten"},
    ]
    # 16 -> conv 14 -> avgpool 7x7 -> conv 7x7 -> avgpool (7+1-2)//2+1 = 4 by (7+1-3)//2+1 = 3
    feat = 5 * 4 * 3
    w1 = (np.sqrt(2.0 / feat) * rng.standard_normal((8, feat))).astype(np.float32)
    w2 = (np.sqrt(2.0 / 8) * rng.standard_normal((4, 8))).astype(np.float32)
    layers += [
        {"op": "gemm", "W": w1, "B": (0.1 * rng.standard_normal(8)).astype(np.float32)},
        {"op": "relu"},
        {"op": "gemm", "W": w2, "B": (0.1 * rng.standard_normal(4)).astype(np.float32)},
    ]
    return layers, (1, 3, 16, 16)


def chain_conv_relu(seed: int = 32) -> tuple[list[dict], tuple]:
    """conv → relu → conv → relu: the smallest net where the three modes differ."""
    rng = np.random.default_rng(seed)
    layers = [
        _conv_layer(rng, 3, 4, 3, pads=(1, 1, 1, 1)),
        {"op": "relu"},
        _conv_layer(rng, 4, 5, 3, strides=(2, 2)),
        {"op": "relu"},
    ]
    return layers, (1, 3, 12, 12)


def chain_transform(seed: int = 33) -> tuple[list[dict], tuple]:
    """transform_input (channel picks, one of them twice) → conv → ReLU → chunk (second half) →
    maxpool → conv → ReLU6 with Cast(Constant) bounds: GoogLeNet's input path and ShuffleNet's chunk."""
    rng = np.random.default_rng(seed)
    layers = [
        {"op": "pick", "source": [2, 0, 1, 0], "scale": [0.458, 0.448, 0.45, -0.7], "shift": [-0.03, -0.088, -0.188, 0.1]},
        _conv_layer(rng, 4, 6, 3, pads=(1, 1, 1, 1)),
        {"op": "relu"},
        {"op": "chunk", "index": 1},
        {"op": "maxpool", "kernel": (3, 3), "strides": (2, 2), "pads": (0, 0, 0, 0)},
        _conv_layer(rng, 3, 4, 3, pads=(1, 1, 1, 1), gain=4.0),
        {"op": "clip", "min": 0.0, "max": 6.0},
    ]
    return layers, (1, 3, 13, 13)


def chain_convnext(seed: int = 34, approximate: str = "tanh") -> tuple[list[dict], tuple]:
    """conv → depthwise 7x7 → LayerNorm over channels → 1x1 conv → GELU → 1x1 conv → ReLU →
    conv → ReLU: ConvNeXt's block (with convs for its Linears) followed by ReLUs, so the modes differ."""
    rng = np.random.default_rng(seed)
    layers = [
        _conv_layer(rng, 3, 4, 2, strides=(2, 2)),
        {**_conv_layer(rng, 1, 4, 7, pads=(3, 3, 3, 3)), "group": 4},
        {"op": "layernorm", "gamma": (1 + 0.3 * rng.standard_normal(4)).astype(np.float32),
         "beta": (0.2 * rng.standard_normal(4)).astype(np.float32), "eps": 1e-6},
        _conv_layer(rng, 4, 8, 1),
        {"op": "gelu", "approximate": approximate},
        _conv_layer(rng, 8, 4, 1),
        {"op": "relu"},
        _conv_layer(rng, 4, 5, 3, pads=(1, 1, 1, 1)),
        {"op": "relu"},
    ]
    return layers, (1, 3, 12, 12)
