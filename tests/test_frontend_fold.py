"""The graph front end: constant folding, the symbolic-inference fallback, declared shapes.

Each graph reproduces, with onnx.helper, a pattern the torch exporters write (the node lists
are those of a TorchScript export, op for op); every expected number is worked out by hand in
the comment beside it.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from cnncli.cli import cli
from helpers import REPO, init, make_model, out, row, save, stats_of, vi

INT64 = TensorProto.INT64


def const(name: str, value, dtype=np.int64):
    """A Constant node, as the TorchScript exporter writes every literal."""
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value, dtype=dtype), name))


def chunk_model() -> "onnx.ModelProto":  # noqa: F821
    """x 1x4x8x8 -> x.chunk(2, dim=1) -> (a, conv(b)) -> concat, exactly as TorchScript exports
    chunk: the split point is Shape -> Gather -> Add 1 -> Div 2 -> Mul 1, then two Slices."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"], name="shape"),
        const("one", [1]),
        helper.make_node("Gather", ["shape", "one"], ["c"], name="gather", axis=0),  # [4]
        const("zero", [0]),
        const("k1", [1]),
        helper.make_node("Add", ["c", "k1"], ["c1"], name="add"),  # 5
        const("k2", [2]),
        helper.make_node("Div", ["c1", "k2"], ["half"], name="div"),  # 5 // 2 = 2
        const("k3", [1]),
        helper.make_node("Mul", ["half", "k3"], ["end0"], name="mul"),  # 2
        helper.make_node("Slice", ["x", "zero", "end0", "one"], ["a"], name="slice0"),  # 1x2x8x8
        const("k4", [2]),
        helper.make_node("Mul", ["half", "k4"], ["end1"], name="mul1"),  # 4
        helper.make_node("Slice", ["x", "end0", "end1", "one"], ["b"], name="slice1"),  # 1x2x8x8
        helper.make_node("Conv", ["b", "W", "B"], ["cb"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["a", "cb"], ["y"], name="cat", axis=1),
    ]
    inits = [init("W", [3, 2, 3, 3]), init("B", [3])]
    return make_model(nodes, [vi("x", ["N", 4, 8, 8])], [out()], inits)


def same_pad_model() -> "onnx.ModelProto":  # noqa: F821
    """TF-style "same" padding as EfficientNet PyTorch ports compute it in forward():
    oh = ceil(ih / s); pad = max((oh - 1)·s + k - ih, 0); F.pad(x, [pad//2, pad - pad//2] per axis),
    then a stride-2 3x3 conv. x 1x3x9x9: oh = ceil(9/2) = 5, pad = max(4·2 + 3 − 9, 0) = 2 → 1, 1."""
    nodes = [helper.make_node("Shape", ["x"], ["shape"], name="shape")]
    begins, ends = [], []
    for axis, tag in ((2, "h"), (3, "w")):
        nodes += [
            const(f"i{tag}", axis),
            helper.make_node("Gather", ["shape", f"i{tag}"], [f"in_{tag}"], axis=0),  # 9 (a scalar)
            helper.make_node("Cast", [f"in_{tag}"], [f"inf_{tag}"], to=TensorProto.FLOAT),
            const(f"s{tag}", 2.0, np.float32),
            helper.make_node("Div", [f"inf_{tag}", f"s{tag}"], [f"q_{tag}"]),  # 4.5
            helper.make_node("Ceil", [f"q_{tag}"], [f"cq_{tag}"]),  # 5.0
            helper.make_node("Cast", [f"cq_{tag}"], [f"o_{tag}"], to=INT64),  # 5
            const(f"one_{tag}", 1),
            helper.make_node("Sub", [f"o_{tag}", f"one_{tag}"], [f"o1_{tag}"]),  # 4
            const(f"st_{tag}", 2),
            helper.make_node("Mul", [f"o1_{tag}", f"st_{tag}"], [f"m_{tag}"]),  # 8
            const(f"k_{tag}", 3),
            helper.make_node("Add", [f"m_{tag}", f"k_{tag}"], [f"a_{tag}"]),  # 11
            helper.make_node("Sub", [f"a_{tag}", f"in_{tag}"], [f"d_{tag}"]),  # 2
            const(f"z_{tag}", 0),
            helper.make_node("Max", [f"d_{tag}", f"z_{tag}"], [f"p_{tag}"]),  # 2
            const(f"two_{tag}", 2),
            helper.make_node("Div", [f"p_{tag}", f"two_{tag}"], [f"b_{tag}"]),  # 1
            helper.make_node("Sub", [f"p_{tag}", f"b_{tag}"], [f"e_{tag}"]),  # 1
            const(f"ax_{tag}", [0]),
            helper.make_node("Unsqueeze", [f"b_{tag}", f"ax_{tag}"], [f"ub_{tag}"]),
            helper.make_node("Unsqueeze", [f"e_{tag}", f"ax_{tag}"], [f"ue_{tag}"]),
        ]
        begins.append(f"ub_{tag}")
        ends.append(f"ue_{tag}")
    nodes += [
        const("zeros2", [0, 0]),
        helper.make_node("Concat", ["zeros2", *begins, "zeros2", *ends], ["pads"], axis=0),  # [0,0,1,1,0,0,1,1]
        helper.make_node("Pad", ["x", "pads"], ["xp"], name="pad", mode="constant"),  # 1x3x11x11
        helper.make_node("Conv", ["xp", "W"], ["c"], name="conv", kernel_shape=[3, 3], strides=[2, 2]),  # 1x4x5x5
        helper.make_node("Relu", ["c"], ["y"], name="relu"),
    ]
    return make_model(nodes, [vi("x", ["N", 3, 9, 9])], [out()], [init("W", [4, 3, 3, 3])])


# ----------------------------------------------------------------------------- chunk (ShuffleNetV2)


def test_chunk_shapes_and_costs_resolve():
    r = stats_of(chunk_model())
    conv = row(r, "conv")
    assert conv.input_shape == [1, 2, 8, 8] and conv.output_shape == [1, 3, 8, 8]
    assert conv.macs == 1 * 3 * 8 * 8 * 2 * 3 * 3  # N·Cout·H·W·Cin·kh·kw = 3456
    assert conv.flops_other == 3 * 8 * 8  # bias adds
    assert conv.params == 3 * 2 * 3 * 3 + 3
    assert r.totals["incomplete"] is False and r.unknown_ops == []
    # the shape arithmetic (Add, Div, Mul on the channel count) is folded: no rows, no FLOPs
    assert [x.name for x in r.layers] == ["conv"]
    assert r.totals["flops"] == 2 * 3456 + 192


def test_chunk_folded_values():
    from cnncli.frontend.graph import analyse

    g = analyse(chunk_model(), batch=2)
    assert g.consts["end0"].value.tolist() == [2] and g.consts["end1"].value.tolist() == [4]
    assert g.consts["shape"].value.tolist() == [2, 4, 8, 8]  # batch 2
    assert g.shape("y") == (2, 5, 8, 8)
    for name in ("shape", "gather", "add", "div", "mul", "mul1"):
        assert name in g.folded
    for name in ("slice0", "slice1", "conv", "cat"):
        assert name not in g.folded
    assert len(g.nodes) == len(chunk_model().graph.node)  # every node is still there
    assert g.unresolved is None


# ----------------------------------------------------------------------------- TF "same" padding


def test_same_padding_resolves():
    r = stats_of(same_pad_model())
    conv = row(r, "conv")
    assert conv.input_shape == [1, 3, 11, 11] and conv.output_shape == [1, 4, 5, 5]
    assert conv.macs == 4 * 5 * 5 * 3 * 3 * 3  # 2700
    assert row(r, "relu").flops_other == 4 * 5 * 5
    assert r.totals["macs"] == 2700 and r.totals["incomplete"] is False
    # receptive field through the computed pads: conv 3x3 stride 2 after a pad of 1
    assert conv.rf == [3, 3] and conv.rf_stride == [2, 2]
    assert [x.name for x in r.layers] == ["conv", "relu"]


def test_same_padding_pads_value():
    from cnncli.frontend.graph import analyse

    g = analyse(same_pad_model())
    assert g.consts["pads"].value.tolist() == [0, 0, 1, 1, 0, 0, 1, 1]
    assert g.consts["q_h"].value.dtype == np.float32 and float(g.consts["q_h"].value) == 4.5


def test_same_padding_at_another_size():
    # x 1x3x16x16: oh = 8, pad = max(7·2 + 3 − 16, 0) = 1 → begin 0, end 1; padded 17 → out 8
    r = stats_of(same_pad_model(), input_shapes={"x": (1, 3, 16, 16)})
    conv = row(r, "conv")
    assert conv.input_shape == [1, 3, 17, 17] and conv.output_shape == [1, 4, 8, 8]
    assert conv.macs == 4 * 8 * 8 * 27


# ----------------------------------------------------------------------------- constants computed by the graph


def test_clip_bounds_cast_from_constants():
    """torch.clamp(x, 0, 6) as TorchScript exports it: Clip(x, Cast(Constant 0), Cast(Constant 6))."""
    from cnncli.frontend.graph import analyse

    nodes = [
        const("lo_i", 0), const("hi_i", 6),
        helper.make_node("Cast", ["lo_i"], ["lo"], name="cast_lo", to=TensorProto.FLOAT),
        helper.make_node("Cast", ["hi_i"], ["hi"], name="cast_hi", to=TensorProto.FLOAT),
        helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="clip"),
    ]
    model = make_model(nodes, [vi("x", [1, 2, 4, 4])], [out()])
    g = analyse(model)
    assert g.consts["lo"].value.dtype == np.float32 and float(g.consts["lo"].value) == 0.0
    assert float(g.consts["hi"].value) == 6.0
    assert "cast_lo" in g.folded and "cast_hi" in g.folded and "clip" not in g.folded
    r = stats_of(model)
    assert [x.name for x in r.layers] == ["clip"] and r.totals["params"] == 0


def _gelu_nodes(x: str, y: str) -> list:
    """GELU as TorchScript writes it: x · 0.5 · (1 + erf(x / √2)), three float scalar Constants."""
    return [
        const("sqrt2", 1.4142135, np.float32), const("one_f", 1.0, np.float32), const("half_f", 0.5, np.float32),
        helper.make_node("Div", [x, "sqrt2"], ["g_div"], name="g_div"),
        helper.make_node("Erf", ["g_div"], ["g_erf"], name="g_erf"),
        helper.make_node("Add", ["g_erf", "one_f"], ["g_add"], name="g_add"),
        helper.make_node("Mul", [x, "g_add"], ["g_mul"], name="g_mul"),
        helper.make_node("Mul", ["g_mul", "half_f"], [y], name="g_half"),
    ]


def test_elementwise_scalars_are_not_params():
    # conv (4·3·3·3 = 108 weights) -> GELU (3 scalars: not params) -> Mul by a 4-channel scale
    # (a folded per-channel scale: 4 params) -> Add of a 1-element tensor initializer named as
    # TorchScript names a folded literal (not a param; a learned one is: test_cost_rules_more.py)
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
        *_gelu_nodes("c", "g"),
        helper.make_node("Mul", ["g", "scale"], ["s"], name="scale"),
        helper.make_node("Add", ["s", "onnx::Add_7"], ["y"], name="shift"),
    ]
    inits = [init("W", [4, 3, 3, 3]), init("scale", [1, 4, 1, 1]), init("onnx::Add_7", [1])]
    r = stats_of(make_model(nodes, [vi("x", [1, 3, 6, 6])], [out()], inits))
    assert r.totals["params"] == 108 + 4
    assert row(r, "g_div").params == 0 and row(r, "g_half").params == 0 and row(r, "shift").params == 0
    assert row(r, "scale").params == 4
    from cnncli.frontend.graph import analyse

    g = analyse(make_model(nodes, [vi("x", [1, 3, 6, 6])], [out()], inits))
    assert float(g.consts["half_f"].value) == 0.5 and g.consts["half_f"].value.dtype == np.float32


def test_weights_are_never_materialised():
    """A ConstantOfShape weight bigger than the folding cap stays unread (no value), but its
    params still count."""
    from cnncli.frontend.fold import FOLD_CAP
    from cnncli.frontend.graph import analyse

    cout = FOLD_CAP // 9 + 1  # cout·1·3·3 > FOLD_CAP
    shape = numpy_helper.from_array(np.array([cout, 1, 3, 3], np.int64), "wshape")
    nodes = [
        helper.make_node("ConstantOfShape", ["wshape"], ["W"], name="wgen",
                         value=numpy_helper.from_array(np.array([0.1], np.float32))),
        helper.make_node("Conv", ["x", "W"], ["y"], name="conv"),
    ]
    model = make_model(nodes, [vi("x", [1, 1, 5, 5])], [out()], [shape])
    g = analyse(model)
    assert g.consts["W"].value is None and "wgen" not in g.folded
    r = stats_of(model)
    assert r.totals["params"] == cout * 9
    assert row(r, "conv").macs == cout * 3 * 3 * 9


# ----------------------------------------------------------------------------- fallbacks


def test_symbolic_inference_alone_resolves_chunk(monkeypatch, tmp_path):
    """With folding switched off, onnxruntime's symbolic shape inference (the fallback) still
    resolves the chunk pattern, and it writes no file into the working folder."""
    import cnncli.frontend.folding as folding

    monkeypatch.setattr(folding, "FOLDABLE", frozenset())
    monkeypatch.chdir(tmp_path)
    r = stats_of(chunk_model())
    assert row(r, "conv").macs == 3 * 8 * 8 * 2 * 9
    assert r.totals["incomplete"] is False
    assert list(tmp_path.iterdir()) == []


def test_declared_value_info_is_a_source():
    """A custom op ONNX cannot infer, whose output shape the graph declares: the conv after it
    is costed from the declared shape (symbolic dims mapped from the input's)."""
    nodes = [
        helper.make_node("Mystery", ["x"], ["m"], name="mystery", domain="com.example"),
        helper.make_node("Conv", ["m", "W"], ["y"], name="conv"),
    ]
    model = make_model(nodes, [vi("x", ["N", 3, 6, 6])], [out()], [init("W", [4, 3, 3, 3])],
                       extra_opsets=[("com.example", 1)])
    model.graph.value_info.append(vi("m", ["N", 3, 6, 6]))
    r = stats_of(model, batch=2)
    assert row(r, "conv").output_shape == [2, 4, 4, 4]
    assert row(r, "conv").macs == 2 * 4 * 4 * 4 * 27
    assert r.unknown_ops == ["com.example.Mystery"]  # the custom op itself has no cost rule


def test_declared_value_info_ignored_when_inputs_differ():
    # declared for 6x6, analysed at 8x8: the declared shape does not hold, so it is not used
    nodes = [
        helper.make_node("Mystery", ["x"], ["m"], name="mystery", domain="com.example"),
        helper.make_node("Conv", ["m", "W"], ["y"], name="conv"),
    ]
    model = make_model(nodes, [vi("x", [1, 3, 6, 6])], [out()], [init("W", [4, 3, 3, 3])],
                       extra_opsets=[("com.example", 1)])
    model.graph.value_info.append(vi("m", [1, 3, 6, 6]))
    r = stats_of(model, input_shapes={"x": (1, 3, 8, 8)})
    assert row(r, "conv").macs is None


# ----------------------------------------------------------------------------- incomplete totals: one warning


def test_unknown_shape_warning_names_first_node(tmp_path):
    """A Reshape whose target shape comes from an input's values cannot be resolved: totals are
    incomplete, and unknown_ops and the warning agree and name the first node not costed."""
    nodes = [
        helper.make_node("Reshape", ["x", "target"], ["r"], name="reshape"),
        helper.make_node("Conv", ["r", "W"], ["c"], name="conv_after"),
        helper.make_node("Relu", ["c"], ["y"], name="relu_after"),
    ]
    model = make_model(nodes, [vi("x", [1, 48]), vi("target", [4], INT64)], [out()], [init("W", [2, 3, 3, 3])])
    p = save(model, tmp_path / "dyn.onnx")
    r = CliRunner().invoke(cli, ["stats", str(p), "--format", "json"])
    assert r.exit_code == 0, r.stderr
    totals = json.loads(r.stdout)["totals"]
    assert totals["incomplete"] is True
    assert totals["unknown_ops"] == ["Conv", "Relu"]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert "incomplete" in lines[0] and "'conv_after' (Conv)" in lines[0] and "Conv, Relu" in lines[0]


def test_plain_stats_does_not_import_onnxruntime(tmp_path):
    """The fallback is imported only when needed: a model ONNX inference resolves costs
    without loading onnxruntime (checked in a fresh interpreter)."""
    p = save(chunk_model(), tmp_path / "chunk.onnx")
    code = (
        "import sys\nfrom cnncli.cli import main\nsys.argv = ['cnn', 'stats', %r, '--format', 'json']\n"
        "import cnncli.cli as c\n"
        "try:\n    c.cli.main(args=sys.argv[1:], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
        "assert 'onnxruntime' not in sys.modules, 'onnxruntime was imported'\n"
        "assert 'sympy' not in sys.modules\n" % str(p)
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["totals"]["macs"] == 3456


def test_float_tensor_arithmetic_is_not_folded():
    """A weight-normalised conv, W·g: two learnable tensors (4·3·3·3 + 4 params) and a Mul, not
    one folded weight (the arithmetic folds integers and float scalars only)."""
    from cnncli.frontend.graph import analyse

    nodes = [
        helper.make_node("Mul", ["V", "g"], ["W"], name="wn"),
        helper.make_node("Conv", ["x", "W"], ["y"], name="conv"),
    ]
    model = make_model(nodes, [vi("x", [1, 3, 5, 5])], [out()], [init("V", [4, 3, 3, 3]), init("g", [4, 1, 1, 1])])
    g = analyse(model)
    assert "wn" not in g.folded
    r = stats_of(model)
    assert r.totals["params"] == 108 + 4
    assert row(r, "conv").macs == 4 * 3 * 3 * 27


# ----------------------------------------------------------------------------- the evaluator against onnx's reference


def _i64(*v):
    return np.array(v, dtype=np.int64)


REFERENCE_CASES = [
    ("Gather", [np.array([2, 4, 8, 8], np.int64), np.array(1, np.int64)], {"axis": 0}),
    ("Gather", [np.arange(12, dtype=np.int64).reshape(3, 4), _i64(-1, 0)], {"axis": 1}),
    ("Slice", [np.arange(10, dtype=np.int64), _i64(-3), _i64(2**62), _i64(0), _i64(1)], {}),
    ("Slice", [np.arange(10, dtype=np.int64), _i64(-1), _i64(-(2**62)), _i64(0), _i64(-2)], {}),
    ("Slice", [np.arange(24, dtype=np.int64).reshape(2, 3, 4), _i64(1, 0), _i64(3, 99), _i64(1, 2)], {}),
    ("Concat", [_i64(1, 2), _i64(3)], {"axis": 0}),
    ("Unsqueeze", [np.array(5, np.int64), _i64(0)], {}),
    ("Unsqueeze", [_i64(1, 2), _i64(-1, 0)], {}),
    ("Squeeze", [np.arange(3, dtype=np.int64).reshape(1, 3, 1), _i64(-1)], {}),
    ("Reshape", [np.arange(12, dtype=np.int64).reshape(3, 4), _i64(0, -1, 2)], {}),
    ("Div", [_i64(7, -7, 9), _i64(2, 2, -4)], {}),
    ("Div", [np.array(9.0, np.float32), np.array(2.0, np.float32)], {}),
    ("Mod", [_i64(7, -7, 9), _i64(3, 3, -4)], {}),
    ("Ceil", [np.array(4.5, np.float32)], {}),
    ("Max", [_i64(-2, 5), _i64(0), _i64(3, 1)], {}),
    ("Where", [np.array([True, False]), _i64(1, 2), _i64(7)], {}),
    ("Range", [np.array(1, np.int64), np.array(10, np.int64), np.array(3, np.int64)], {}),
    ("Range", [np.array(5, np.int64), np.array(-1, np.int64), np.array(-2, np.int64)], {}),
    ("Equal", [_i64(1, 2, 3), _i64(2)], {}),
    ("Expand", [_i64(1, 2), _i64(3, 1)], {}),
    ("Tile", [_i64(1, 2), _i64(3)], {}),
    ("ConstantOfShape", [_i64(2, 3)], {"value": numpy_helper.from_array(np.array([7], np.int64))}),
    ("Cast", [_i64(3, -1)], {"to": TensorProto.FLOAT}),
    ("Transpose", [np.arange(6, dtype=np.int64).reshape(2, 3)], {"perm": [1, 0]}),
    ("ReduceProd", [_i64(2, 3, 4)], {"keepdims": 0}),
    ("Split", [np.arange(5, dtype=np.int64)], {"axis": 0, "num_outputs": 2}),
]


@pytest.mark.parametrize("op, inputs, attributes", REFERENCE_CASES, ids=[c[0] for c in REFERENCE_CASES])
def test_fold_matches_onnx_reference(op, inputs, attributes):
    """Each folding rule gives what onnx's reference implementation gives (opset 18)."""
    from onnx.reference import ReferenceEvaluator

    from cnncli.frontend.folding import fold
    from cnncli.frontend.graph import node_table

    names = [f"i{k}" for k in range(len(inputs))]
    n_out = 2 if op == "Split" else 1
    outs = [f"o{k}" for k in range(n_out)]
    node = helper.make_node(op, names, outs, **attributes)
    values = dict(zip(names, inputs))
    got = fold([node], node_table([node]), values.get, {}, set())
    model = helper.make_model(
        helper.make_graph([node], "g", [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
                                        for n, v in values.items()],
                          [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None) for o in outs]),
        opset_imports=[helper.make_opsetid("", 18)],
    )
    want = ReferenceEvaluator(model).run(None, values)
    assert set(got) == set(outs)
    for o, w in zip(outs, want):
        assert got[o].dtype == w.dtype, (got[o].dtype, w.dtype)
        np.testing.assert_array_equal(got[o], w)
