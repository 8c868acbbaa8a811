"""A model whose image input has no batch axis ([C, H, W]: a Conv after an Unsqueeze) runs in
`cnn project` and `cnn features` (an image or a .npy, [C, H, W] or [1, C, H, W]) and `cnn top`
(images) exactly as its twin with a batch axis does (issue 16); `cnn stats` gives the same
receptive fields.

The twin is the same model with input [1, C, H, W] and no Unsqueeze: every projection, activation
and top row of the batchless model must equal the twin's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import cnncli
from cnncli.cli import cli


def conv_net(batchless: bool, opset: int = 17) -> onnx.ModelProto:
    """x [3, 10, 10] → Unsqueeze → conv → ReLU → conv → ReLU (or x [1, 3, 10, 10] straight into the convs)."""
    rng = np.random.default_rng(0)
    x = "x_b" if batchless else "x"
    nodes = [helper.make_node("Conv", [x, "W1", "B1"], ["c1"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "W2"], ["c2"], name="conv2", kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c2"], ["y"], name="relu2")]
    inits = {"W1": rng.standard_normal((4, 3, 3, 3)), "B1": rng.standard_normal(4), "W2": rng.standard_normal((5, 4, 3, 3))}
    inits = [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()]
    if batchless:
        if opset >= 13:
            inits.append(numpy_helper.from_array(np.asarray([0], np.int64), "axis0"))
            nodes.insert(0, helper.make_node("Unsqueeze", ["x", "axis0"], ["x_b"], name="unsqueeze"))
        else:
            nodes.insert(0, helper.make_node("Unsqueeze", ["x"], ["x_b"], name="unsqueeze", axes=[0]))
    shape = [3, 10, 10] if batchless else [1, 3, 10, 10]
    graph = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    return model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("batchless")
    rng = np.random.default_rng(1)
    for name, batchless in (("flat.onnx", True), ("twin.onnx", False)):
        onnx.save(conv_net(batchless), d / name)
    onnx.save(conv_net(True, opset=11), d / "flat11.onnx")
    x = rng.standard_normal((3, 10, 10)).astype(np.float32)
    np.save(d / "x.npy", x)
    np.save(d / "x4.npy", x[None])
    (d / "imgs").mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (14, 12, 3), dtype=np.uint8)).save(d / "imgs" / f"i{i}.png")
    return d


def run_cli(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("model", ["flat.onnx", "flat11.onnx"])
@pytest.mark.parametrize("image", ["x.npy", "x4.npy", "imgs/i0.png"])
@pytest.mark.parametrize("mode", ["deconvnet", "backprop"])
def test_project_equals_the_batched_twin(files, model, image, mode):
    """The array [C, H, W] (or [1, C, H, W]) and a picture: each projection equals the twin's, on
    the twin's input ([1, C, H, W] for a .npy)."""
    twin_image = files / ("x4.npy" if image.endswith(".npy") else image)
    got = cnncli.project(files / model, files / image, layer=2, channels="all", mode=mode)
    want = cnncli.project(files / "twin.onnx", twin_image, layer=2, channels="all", mode=mode)
    assert len(got) == len(want) == 5
    assert any(np.abs(p.array).max() > 0 for p in got)
    for g, w in zip(got, want):
        assert g.array.shape == (3, 10, 10)
        np.testing.assert_allclose(g.array, w.array, rtol=1e-5, atol=1e-6)
        assert (g.activation, g.location) == (w.activation, w.location)


@pytest.mark.parametrize("image", ["x.npy", "imgs/i1.png"])
def test_cnn_project_writes_its_files(files, tmp_path, image):
    out = tmp_path / "out"
    doc = json.loads(run_cli("project", files / "flat.onnx", files / image, "--layer", "1", "--channel", "0,2",
                             "--out", out, "--format", "json"))
    written = [f for row in doc["results"] for f in row["files"].values()]
    assert [row["channel"] for row in doc["results"]] == [0, 2]
    assert len(written) == 4 and all(Path(f).is_file() for f in written)


def test_cnn_project_refuses_a_wrong_array_with_the_model_shape(files, tmp_path):
    np.save(tmp_path / "bad.npy", np.zeros((3, 9, 10), np.float32))
    result = CliRunner().invoke(cli, ["project", str(files / "flat.onnx"), str(tmp_path / "bad.npy"), "--layer", "1"])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert "3x9x10" in result.output and "1x3x10x10" in result.output and "batch 1" not in result.output


@pytest.mark.parametrize("image,twin_image", [("imgs/i2.png", "imgs/i2.png"), ("x.npy", "x4.npy")])
def test_features_equals_the_batched_twin(files, tmp_path, image, twin_image):
    """A picture, and a .npy (used as it is, as `cnn project` uses one)."""
    got = cnncli.features(files / "flat.onnx", files / image, layer=2)
    want = cnncli.features(files / "twin.onnx", files / twin_image, layer=2)
    np.testing.assert_array_equal(got.activations, want.activations)
    assert got.rows == want.rows and np.abs(got.activations).max() > 0
    doc = json.loads(run_cli("features", files / "flat.onnx", files / "imgs" / "i2.png", "--layer", "1",
                             "--out", tmp_path, "--format", "json"))
    assert len(doc["channels"]) == 4


def test_top_equals_the_batched_twin(files, tmp_path):
    got = cnncli.top(files / "flat.onnx", files / "imgs", layer=2, channels="all", k=2)
    want = cnncli.top(files / "twin.onnx", files / "imgs", layer=2, channels="all", k=2)
    assert [r.entries for r in got.rows] == [r.entries for r in want.rows]
    assert got.meta["scanned"] == 3
    doc = json.loads(run_cli("top", files / "flat.onnx", files / "imgs", "--layer", "2", "--channel", "1",
                             "-k", "2", "--out", tmp_path, "--format", "json"))
    assert len(doc["channels"]) == 1


def test_the_model_given_is_left_as_it_is(files):
    model = conv_net(True)
    before = model.SerializeToString()
    cnncli.project(model, np.load(files / "x.npy"), layer=1, channels=0)
    assert model.SerializeToString() == before


def test_stats_receptive_fields_equal_the_batched_twin(files):
    """The receptive fields run through the Unsqueeze that gives the input its batch axis (and,
    in the commands above, the Squeeze that takes it off): `cnn stats` shows the twin's."""
    def fields(name):
        doc = json.loads(run_cli("stats", files / name, "--format", "json"))
        return [(row["name"], row["rf"], row["rf_stride"]) for row in doc["layers"]]

    got = fields("flat.onnx")
    assert got == fields("twin.onnx") and got[-1][1] == [5, 5]
