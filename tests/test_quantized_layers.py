"""Quantized convolutions are layers as a Conv is: onnxruntime's dynamic quantization (ConvInteger)
and its QOperator format (QLinearConv) get layer numbers, receptive fields, connectivity rows and
dequantized filters; `--layer N` is the float block output after them; and every image command
runs on a dynamically quantized model, one image a run (its scales are the batch's range). A
projection back through a QLinearConv (uint8 codes, no signal) is refused with its reason."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import cnncli
from cnncli.cli import cli
from helpers import REPO, assert_one_line_error

FLOAT = REPO / "sample_models" / "zfnet_mini.onnx"
DYNAMIC = REPO / "tests" / "fixtures" / "exporters_more" / "zfnet_mini.dynamic.onnx"
QDQ = REPO / "tests" / "fixtures" / "exporters_more" / "zfnet_mini.qdq.onnx"
IMAGES = REPO / "sample_models" / "images"
STAR = IMAGES / "star.png"


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def qoperator(tmp_path_factory):
    """A two-conv net (3x3 pad 1, ReLU, max-pool 2/2, 3x3, ReLU on 16x16) and its QOperator
    quantization by onnxruntime (QLinearConv, uint8 activations, int8 weights)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    folder = tmp_path_factory.mktemp("qop")
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "W1"),
             numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "B1"),
             numpy_helper.from_array(rng.normal(0, 0.2, (6, 8, 3, 3)).astype(np.float32), "W2"),
             numpy_helper.from_array(rng.normal(0, 0.1, 6).astype(np.float32), "B2")]
    nodes = [helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="pool1"),
             helper.make_node("Conv", ["p1", "W2", "B2"], ["c2"], name="conv2"),
             helper.make_node("Relu", ["c2"], ["y"], name="relu2")]
    graph = helper.make_graph(nodes, "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 6, 6])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    float_path, q_path = folder / "float.onnx", folder / "qop.onnx"
    onnx.save(model, float_path)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": rng.uniform(0, 1, (1, 3, 16, 16)).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(float_path), str(q_path), Reader(), quant_format=QuantFormat.QOperator,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    assert [n.op_type for n in onnx.load(q_path).graph.node].count("QLinearConv") == 2
    return float_path, q_path


def test_quantized_convs_get_layer_numbers_and_receptive_fields(qoperator):
    ref = {r.index: r for r in cnncli.stats(FLOAT).layers if r.index}
    dyn = {r.index: r for r in cnncli.stats(DYNAMIC).layers if r.index}
    assert sorted(dyn) == sorted(ref) == [1, 2, 3, 4, 5]
    assert all(dyn[i].op == "ConvInteger" and dyn[i].rf == ref[i].rf and dyn[i].macs == ref[i].macs for i in ref)
    assert cnncli.stats(DYNAMIC).totals["convs"] == 5
    q = {r.index: r for r in cnncli.stats(qoperator[1]).layers if r.index}
    assert [q[i].op for i in sorted(q)] == ["QLinearConv", "QLinearConv"]
    assert (q[1].rf, q[2].rf) == ([3, 3], [8, 8])  # by hand: 3; max-pool 2/2 → 4 (jump 2); 3x3 → 4 + 2·2


@pytest.mark.parametrize("model", [DYNAMIC, QDQ])
def test_layer_n_is_the_float_block_output(model):
    from cnncli.api.sources import load
    from cnncli.engine.model_input import open_for_images
    from cnncli.engine.targets import by_layer

    m = open_for_images(load(str(model)))
    assert [by_layer(m.graph, n).tensor for n in range(1, 6)] == [f"relu{n}" for n in range(1, 6)]
    assert m.batchable is (model != DYNAMIC)  # dynamic scales couple a batch's images: one a run


def test_filters_and_connectivity_of_quantized_convs(qoperator):
    for n in (1, 2, 5):  # int8 weights less their zero point, times the weight scale
        want = cnncli.filters(FLOAT, layer=n).weights
        got = cnncli.filters(DYNAMIC, layer=n).weights
        assert np.abs(got - want).max() <= np.abs(want).max() / 127 * 0.51
    float_path, q_path = qoperator
    for n in (1, 2):
        want = cnncli.filters(float_path, layer=n).weights
        got = cnncli.filters(q_path, layer=n).weights
        assert got.shape == want.shape and np.abs(got - want).max() <= np.abs(want).max() / 127 * 0.51
    rows = lambda m: [(r.index, r.shared, r.local, r.full) for r in cnncli.connectivity(m).rows]  # noqa: E731
    assert rows(DYNAMIC) == rows(FLOAT)


def test_image_commands_run_on_a_dynamically_quantized_model(tmp_path):
    """top, cam over a folder, report and dream: each image its own run (the batch's shared scale
    made a 0-d value that the per-image reverse rows could not be cut from: a traceback)."""
    top = lambda m, o: json.loads(invoke("top", m, IMAGES, "--layer", 3, "--channel", "101,135", "-k", 2,  # noqa: E731
                                         "--quiet", "--out", o, "--format", "json").stdout)
    got, want = top(DYNAMIC, tmp_path / "t"), top(FLOAT, tmp_path / "f")
    for g, w in zip(got["channels"], want["channels"]):
        assert [(e["image"], e["location"], e["box"]) for e in g["entries"]] == \
               [(e["image"], e["location"], e["box"]) for e in w["entries"]]
        assert g["best"] == pytest.approx(w["best"], rel=0.02)
    r = invoke("cam", DYNAMIC, IMAGES, "--top", 2, "--no-figure", "--quiet", "--out", tmp_path / "c", "--format", "json")
    assert r.exit_code == 0, r.stderr
    assert len(json.loads(r.stdout)["results"]) == 2 * len([p for p in IMAGES.iterdir() if p.is_file()])
    r = invoke("report", DYNAMIC, IMAGES, "--layers", "1,5", "-k", 2, "--channels", 1, "--per-image", 1, "--top", 1,
               "--quiet", "--out", tmp_path / "r", "--format", "json")
    assert r.exit_code == 0, r.stderr
    r = invoke("dream", DYNAMIC, "--layer", 3, "--channel", "0,1", "--steps", 4, "--quiet", "--out", tmp_path / "d",
               "--format", "json")
    assert r.exit_code == 0, r.stderr


def test_a_projection_through_qlinearconv_is_refused_with_its_reason(qoperator, tmp_path):
    line = assert_one_line_error(invoke("project", qoperator[1], STAR, "--layer", 2, "--channel", 0,
                                        "--out", tmp_path), 1)
    assert "QLinearConv" in line and "no reverse signal" in line
    r = invoke("features", qoperator[1], STAR, "--layer", 1, "--out", tmp_path / "f", "--format", "json")
    assert r.exit_code == 0, r.stderr  # forward only: its maps (uint8 codes) are there


def test_report_shows_what_it_can_where_nothing_projects(qoperator, tmp_path):
    """`cnn report` on a QOperator model: costs, filters and each channel's top-k patches, with a
    warning and a note per layer instead of projections (the whole report failed)."""
    r = invoke("report", qoperator[1], IMAGES, "-k", 2, "--channels", 2, "--out", tmp_path / "r", "--format", "json")
    assert r.exit_code == 0, r.stderr
    assert "layer 2 is not projected" in r.stderr and "QLinearConv" in r.stderr
    doc = json.loads(r.stdout)
    assert [row["tiles"] for row in doc["layers"]] == [0, 0]
    page = (tmp_path / "r" / "index.html").read_text(encoding="utf-8")
    assert "Not projected: " in page and "_patch.png" in page and "_projection.png" not in page
    # the filters' scale line is read whole under a montage narrower than it
    from PIL import Image, ImageDraw

    from cnncli.imaging.figure import font

    montage = cnncli.filters(qoperator[1], layer=2).montage
    note = "one scale for all: mid-grey 0, white +0.78, black -0.78"
    assert montage.shape[1] >= ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(note, font=font(12)) * 0.9
