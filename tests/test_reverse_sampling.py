"""Reverse rules of the sampling and region ops (issue 16): GridSample in every mode, padding mode
and align_corners (its image and its grid), AffineGrid, DeformConv (image, offsets and mask),
Col2Im, MaxUnpool, RoiAlign and MaxRoiPool.

Each one-node model's backprop pass is checked by tests/node_coverage.py's own check (central
finite differences of ⟨R, y⟩ on onnxruntime, in float64 where onnxruntime has the kernel) on
inputs chosen to reach the padding, the borders and ties; models where the signal reaches a
sampling op along two paths (a spatial transformer, a deformable conv whose offsets a conv
computes) against finite differences of the whole model; no op here rectifies (the three modes
are the same); and `cnn project` end to end through a tiny model holding GridSample.
"""
from __future__ import annotations

import node_coverage as NC
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from node_cases import Case, retyped
from onnx import TensorProto, helper, numpy_helper
from reverse_models_llm import dcn_model, stn_model
from reverse_models_llm import sampling_model as _model

from cnncli.cli import cli
from cnncli.engine.project import Projector
from cnncli.frontend.graph import analyse
from cnncli.reverse.rules import NOT_YET, RULES

OPS = ("GridSample", "AffineGrid", "DeformConv", "Col2Im", "MaxUnpool", "RoiAlign", "MaxRoiPool")


def node_case(op: str, inputs: dict, opset: int, **attrs) -> Case:
    """One node, every input a graph input (the check stores all but the one it differentiates)."""
    node = helper.make_node(op, list(inputs), ["y"], **attrs)
    vis = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(np.asarray(v).dtype), np.shape(v))
           for k, v in inputs.items()]
    graph = helper.make_graph([node], "one", vis, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    feeds = {k: np.asarray(v) for k, v in inputs.items()}
    y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, y.shape))  # as onnx's node tests declare it
    model.graph.CopyFrom(graph)
    return Case(f"{op}-{attrs}", op, opset, model, feeds, [y])


def assert_fd(case: Case, name: str, precision: str | None = "float64"):
    outcome = NC.check_reverse_input(case, name)
    assert outcome.status == "pass", outcome.why
    if precision:
        assert outcome.why == precision


def f32(rng, shape, lo=-1.0, hi=1.0):
    return rng.uniform(lo, hi, shape).astype(np.float32)


def test_ops_have_a_rule_and_left_not_yet():
    assert set(OPS) - set(RULES) == set()
    assert set(OPS) & NOT_YET == set()


# ---------------------------------------------------------------- GridSample, AffineGrid


@pytest.mark.parametrize("mode", ["linear", "nearest", "cubic"])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align", [0, 1])
@pytest.mark.parametrize("on", ["x", "grid"])
def test_grid_sample(mode, padding, align, on):
    """The image, or the grid as the signal's path (the taps' weight derivatives; nearest: none).
    The grid reaches past the image (×1.5), so each padding mode's taps are exercised."""
    rng = np.random.default_rng(0)
    case = node_case("GridSample", {"x": f32(rng, (1, 2, 4, 5)), "grid": f32(rng, (1, 3, 4, 2), -1.5, 1.5)}, 20,
                     mode=mode, padding_mode=padding, align_corners=align)
    assert_fd(case, on)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_grid_sample_opset_16_mode_names(mode):
    rng = np.random.default_rng(0)
    inputs = {"x": f32(rng, (1, 2, 4, 5)), "grid": f32(rng, (1, 3, 4, 2), -1.2, 1.2)}
    for name in ("x", "grid"):  # (onnxruntime's GridSample-16 is float only)
        assert_fd(node_case("GridSample", inputs, 16, mode=mode, padding_mode="border"), name, precision=None)


@pytest.mark.parametrize("mode", ["linear", "nearest"])
@pytest.mark.parametrize("padding", ["zeros", "reflection"])
def test_grid_sample_volumetric(mode, padding):
    rng = np.random.default_rng(2)
    inputs = {"x": f32(rng, (1, 2, 3, 4, 3)), "grid": f32(rng, (1, 2, 3, 2, 3), -1.4, 1.4)}
    assert_fd(node_case("GridSample", inputs, 20, mode=mode, padding_mode=padding), "x")
    if mode == "linear":
        assert_fd(node_case("GridSample", inputs, 20, mode=mode, padding_mode=padding), "grid")


def test_grid_sample_nearest_gives_the_grid_no_signal():
    rng = np.random.default_rng(3)
    case = node_case("GridSample", {"x": f32(rng, (1, 1, 3, 3)), "grid": f32(rng, (1, 2, 2, 2))}, 16, mode="nearest")
    model = retyped(case.model, TensorProto.FLOAT, {"x": case.inputs["x"]})
    p = Projector(model, analyse(model), "grid", "y", "backprop")
    back = p.run_reverse(np.ones((1, 1, 2, 2), np.float32), p.forward(case.inputs["grid"]))
    assert back.shape == (1, 2, 2, 2) and not back.any()


@pytest.mark.parametrize("size", [[1, 2, 3, 4], [1, 1, 2, 3, 4]])
@pytest.mark.parametrize("align", [0, 1])
def test_affine_grid(size, align):
    rng = np.random.default_rng(4)
    r = len(size) - 2
    inputs = {"theta": f32(rng, (1, r, r + 1)), "size": np.asarray(size, np.int64)}
    assert_fd(node_case("AffineGrid", inputs, 20, align_corners=align), "theta")


class _Run:
    """The forward model as node_coverage's finite differences read it (float32: onnxruntime has
    no double Conv kernel; tolerance the node-test check's float32 one, 2e-2 of the gradient)."""

    elem = TensorProto.FLOAT

    def __init__(self, model):
        self.session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

    def y(self, x):
        return self.session.run(None, {"x": x.astype(np.float32)})[0].astype(np.float64)


def assert_model_fd(model, seed=0):
    """Backprop of ⟨R, y⟩ equals central differences of the whole model along random directions."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (1, 2, 6, 6)).astype(np.float32)
    p = Projector(model, analyse(model), "x", "y", "backprop")
    act = p.forward(x)
    R = rng.standard_normal(act["y"].shape).astype(np.float32)
    grad = p.run_reverse(R, act).astype(np.float64)
    for _ in range(3):
        v = rng.standard_normal(x.shape)
        v /= np.linalg.norm(v)
        gd = float(np.sum(grad * v))
        assert NC._agrees(_Run(model), R.astype(np.float64), x.astype(np.float64), v, gd, 2e-2 * np.linalg.norm(grad)), gd


@pytest.mark.parametrize("make", [stn_model, lambda: stn_model("cubic", "reflection"), dcn_model])
def test_sampling_at_computed_positions(make):
    assert_model_fd(make())


@pytest.mark.parametrize("make", [stn_model, dcn_model])
def test_reverse_rows_at_computed_positions(make):
    """Channels projected together (one reverse row each, the forward batch of one shared) equal
    each channel projected alone: the grid's and offsets' signal keeps its rows."""
    model = make()
    x = f32(np.random.default_rng(15), (1, 2, 6, 6))
    together = Projector(model, analyse(model), "x", "y", "backprop").project(x, [0, 1], keep="map")
    for c, result in enumerate(together):
        alone = Projector(model, analyse(model), "x", "y", "backprop").project(x, [c], keep="map")[0]
        assert np.abs(result.projection).max() > 0
        np.testing.assert_array_equal(result.projection, alone.projection)


# ---------------------------------------------------------------- DeformConv


@pytest.mark.parametrize("group,offset_group,strides,dilations,pads", [
    (1, 1, [1, 1], [1, 1], [0, 0, 0, 0]), (2, 2, [2, 1], [1, 2], [1, 1, 0, 2]), (1, 2, [1, 1], [1, 1], [1, 1, 1, 1])])
def test_deform_conv(group, offset_group, strides, dilations, pads):
    rng = np.random.default_rng(6)
    C, H, W, k = 4, 5, 6, (2, 3)
    oh = (H + pads[0] + pads[2] - dilations[0] * (k[0] - 1) - 1) // strides[0] + 1
    ow = (W + pads[1] + pads[3] - dilations[1] * (k[1] - 1) - 1) // strides[1] + 1
    inputs = {"x": f32(rng, (1, C, H, W)), "w": f32(rng, (6, C // group, *k)), "offset": f32(rng, (1, offset_group * 12, oh, ow), -2, 2),
              "b": f32(rng, (6,)), "mask": f32(rng, (1, offset_group * 6, oh, ow), 0, 1)}
    case = node_case("DeformConv", inputs, 19, group=group, offset_group=offset_group, strides=strides,
                     dilations=dilations, pads=pads, kernel_shape=list(k))
    for name in ("x", "offset", "mask"):
        assert_fd(case, name)
    assert NC.check_reverse_input(case, "w").status == "refused"  # as Conv: weights are not the signal's path


# ---------------------------------------------------------------- Col2Im, MaxUnpool


@pytest.mark.parametrize("image,block,attrs", [
    ([5, 5], [2, 3], {}), ([6, 5], [2, 2], {"strides": [2, 1], "pads": [1, 0, 1, 2], "dilations": [1, 2]}),
    ([3, 4, 3], [2, 2, 1], {"strides": [1, 2, 1]})])
def test_col2im(image, block, attrs):
    r = len(image)
    st, dl, pd = attrs.get("strides", [1] * r), attrs.get("dilations", [1] * r), attrs.get("pads", [0] * 2 * r)
    L = int(np.prod([(image[i] + pd[i] + pd[r + i] - dl[i] * (block[i] - 1) - 1) // st[i] + 1 for i in range(r)]))
    inputs = {"x": f32(np.random.default_rng(8), (1, 2 * int(np.prod(block)), L)),
              "image_shape": np.asarray(image, np.int64), "block_shape": np.asarray(block, np.int64)}
    assert_fd(node_case("Col2Im", inputs, 18, **attrs), "x", precision=None)  # (float kernel only)


@pytest.mark.parametrize("indices", [[[5, 7], [13, 15]], [[0, 5], [5, 10]]])
def test_max_unpool(indices):
    """A place two values write (the second: indices [0, 5], [5, 10]) keeps the later one: only
    it gets the signal there."""
    rng = np.random.default_rng(9)
    inputs = {"x": f32(rng, (1, 2, 2, 2)), "i": np.asarray([indices, np.add(indices, 16).tolist()], np.int64)[None]}
    assert_fd(node_case("MaxUnpool", inputs, 11, kernel_shape=[2, 2], strides=[2, 2]), "x", precision=None)
    shaped = dict(inputs, output_shape=np.asarray([1, 2, 5, 5], np.int64))
    assert_fd(node_case("MaxUnpool", shaped, 11, kernel_shape=[2, 2], strides=[2, 2]), "x", precision=None)


# ---------------------------------------------------------------- RoiAlign, MaxRoiPool


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("ctm", ["half_pixel", "output_half_pixel"])
@pytest.mark.parametrize("ratio,scale", [(0, 1.0), (2, 0.5)])
def test_roi_align(mode, ctm, ratio, scale):
    """Boxes inside, across the border and past it, on both images of a batch of two (onnxruntime
    has no RoiAlign-22 kernel: opset 16, the same op)."""
    rng = np.random.default_rng(10)
    rois = np.asarray([[0.5, 1.0, 5.5, 4.2], [-2.0, 3.0, 3.0, 9.5], [4.0, -1.5, 12.0, 4.0], [1.2, 1.1, 2.0, 2.3]], np.float32)
    inputs = {"x": f32(rng, (2, 3, 7, 8)), "rois": rois / scale, "batch": np.asarray([0, 1, 1, 0], np.int64)}
    case = node_case("RoiAlign", inputs, 16, mode=mode, output_height=3, output_width=2, sampling_ratio=ratio,
                     spatial_scale=scale, coordinate_transformation_mode=ctm)
    assert_fd(case, "x")
    assert NC.check_reverse_input(case, "rois").status == "refused"  # boxes are read when the reverse graph is built


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("opset", [10, 16])
def test_roi_align_one_box(mode, opset):
    """One box of an image of batch one keeps the reverse rows; RoiAlign-10 samples as
    output_half_pixel (it has no coordinate_transformation_mode), RoiAlign-16's default is half_pixel."""
    inputs = {"x": f32(np.random.default_rng(16), (1, 2, 6, 7)), "rois": np.asarray([[0.7, 0.4, 5.2, 4.9]], np.float32),
              "batch": np.zeros(1, np.int64)}
    assert_fd(node_case("RoiAlign", inputs, opset, mode=mode, output_height=2, output_width=3), "x")


@pytest.mark.parametrize("rois,scale", [([[0, 0.6, 1.2, 5.5, 4.4], [0, 3, 2, 3, 2], [0, 6, 5, 12, 9]], 1.0),
                                        ([[0, 1, 2, 9, 14], [0, -4, -4, 2, 2]], 0.5)])
def test_max_roi_pool(rois, scale):
    rng = np.random.default_rng(11)
    inputs = {"x": f32(rng, (1, 2, 7, 8)), "rois": np.asarray(rois, np.float32)}
    assert_fd(node_case("MaxRoiPool", inputs, 1, pooled_shape=[3, 2], spatial_scale=scale), "x", precision=None)


def test_max_roi_pool_one_box_keeps_the_reverse_rows():
    """One box of an image of batch one: the output's first axis is 1, so each channel projects
    as its own reverse row; its window's largest value gets the signal."""
    x = np.random.default_rng(14).permutation(32).astype(np.float32).reshape(1, 2, 4, 4)
    case = node_case("MaxRoiPool", {"x": x, "rois": np.asarray([[0, 0, 0, 3, 3]], np.float32)}, 1, pooled_shape=[1, 1])
    model = retyped(case.model, TensorProto.FLOAT, {"rois": case.inputs["rois"]})
    results = Projector(model, analyse(model), "x", "y", "backprop").project(x, [0, 1], keep="map")
    for c, result in enumerate(results):
        expected = np.zeros((2, 4, 4), np.float32)
        at = np.unravel_index(np.argmax(x[0, c]), (4, 4))
        expected[(c, *at)] = x[0, c].max()  # the signal is the channel's activation
        np.testing.assert_array_equal(result.projection, expected)


@pytest.mark.parametrize("op", ["GridSample", "RoiAlign", "DeformConv"])
def test_no_op_here_rectifies(op):
    rng = np.random.default_rng(12)
    x = f32(rng, (1, 2, 6, 6))
    node = {"GridSample": helper.make_node("GridSample", ["x", "grid"], ["y"]),
            "RoiAlign": helper.make_node("RoiAlign", ["x", "rois", "batch"], ["y"], mode="max", output_height=2, output_width=2),
            "DeformConv": helper.make_node("DeformConv", ["x", "w", "offset"], ["y"], kernel_shape=[2, 2])}[op]
    inits = {"grid": f32(rng, (1, 3, 3, 2)), "rois": np.asarray([[0.5, 0.5, 4.5, 5.0]], np.float32),
             "batch": np.zeros(1, np.int64), "w": f32(rng, (3, 2, 2, 2)), "offset": f32(rng, (1, 8, 5, 5))}
    model = _model([node], {k: v for k, v in inits.items() if k in node.input}, opset=16 if op != "DeformConv" else 19)
    maps = {m: np.stack([r.projection for r in Projector(model, analyse(model), "x", "y", m).project(x, [0, 1], keep="map")])
            for m in ("backprop", "deconvnet", "guided")}
    assert np.abs(maps["backprop"]).max() > 0
    np.testing.assert_array_equal(maps["deconvnet"], maps["backprop"])
    np.testing.assert_array_equal(maps["guided"], maps["backprop"])


# ---------------------------------------------------------------- end to end


def test_cnn_project_through_grid_sample(tmp_path):
    """conv1 → GridSample at a stored grid (a warp) → conv2: `cnn project` at layer 2 in each mode."""
    rng = np.random.default_rng(13)
    nodes = [helper.make_node("Conv", ["x", "W1"], ["c1"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("GridSample", ["r1", "grid"], ["warped"], name="warp", mode="bilinear", padding_mode="reflection"),
             helper.make_node("Conv", ["warped", "W2"], ["c2"], name="conv2", kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    inits = [numpy_helper.from_array(v, k) for k, v in {
        "W1": f32(rng, (4, 3, 3, 3)), "W2": f32(rng, (5, 4, 3, 3)), "grid": f32(rng, (1, 12, 12, 2), -1.1, 1.1)}.items()]
    graph = helper.make_graph(nodes, "warp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("c2", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "warp.onnx")
    np.save(tmp_path / "x.npy", f32(rng, (1, 3, 16, 16)))
    for mode in ("backprop", "deconvnet", "guided"):
        out = tmp_path / mode
        result = CliRunner().invoke(cli, ["project", str(tmp_path / "warp.onnx"), str(tmp_path / "x.npy"), "--layer", "2",
                                          "--channel", "0", "--mode", mode, "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert any(out.iterdir())
