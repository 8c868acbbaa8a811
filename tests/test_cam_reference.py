"""`cnn cam`'s raw maps against pytorch-grad-cam's and Captum's (issue 17's acceptance): every
method, on a small residual CNN exported with both torch exporters and on three torchvision
architectures (random weights, seed 0), to 1e-4 relative (the largest difference over the largest
reference value). The references were made by tests/fixtures/cam/make_cam_fixtures.py (torch,
grad-cam, captum); this test needs none of them.

The engine runs both images and both classes of each fixture in one batch (one forward run, one
reverse run of 4 rows); ``cnncli.cam`` runs one image end to end.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnncli.choices import CAM_METHODS

FIXTURES = Path(__file__).parent / "fixtures" / "cam"
MODELS = ["small_torchscript", "small_dynamo", "shufflenet_v2_x0_5", "mobilenet_v3_small_w05", "densenet_tiny_dynamo"]
RTOL = 1e-4


def relative(got: np.ndarray, ref: np.ndarray) -> float:
    assert got.shape == ref.shape
    return float(np.abs(got - ref).max() / np.abs(ref).max())


def _fixture(name: str):
    return np.load(FIXTURES / f"{name}.npz")


def _engine(name: str, method: str, guided: bool = False):
    from cnncli.api.sources import open_with_image
    from cnncli.engine.cam import CamEngine, Score

    d = _fixture(name)
    m, _ = open_with_image(str(FIXTURES / f"{name}.onnx"), d["x"][:1])
    out = m.model.graph.output[0].name
    engine = CamEngine(m.model, m.graph, m.input_name, str(d["layer_tensor"]), Score(out, tuple(m.graph.shape(out))),
                       method, guided=guided)
    return engine, d, m.graph.shape(str(d["layer_tensor"]))[1]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("method", CAM_METHODS)
def test_raw_map_equals_pytorch_grad_cam(name, method):
    engine, d, channels = _engine(name, method)
    classes = d["classes"].tolist()
    result = engine.run(d["x"], lambda out: classes)
    assert result.units == classes
    np.testing.assert_allclose(result.scores, np.take_along_axis(d["logits"], d["classes"], axis=1), rtol=1e-4, atol=1e-5)
    ref = d[f"map_{method}"]
    assert np.abs(ref).max() > 0  # a map that says something
    assert relative(result.maps, ref) <= RTOL
    if method == "gradcam":
        assert relative(result.maps, d["captum_gradcam"]) <= RTOL
    if method == "scorecam":  # the images' forward runs, then one per channel and image (for every class at once)
        assert result.forwards == len(d["x"]) * (1 + channels)


@pytest.mark.parametrize("name", ["small_torchscript", "small_dynamo"])
def test_guided_backprop_equals_pytorch_grad_cam(name):
    engine, d, _ = _engine(name, "gradcam", guided=True)
    top = d["classes"][:, :1].tolist()
    result = engine.run(d["x"], lambda out: top)
    assert relative(result.guided[:, 0], d["guided"]) <= RTOL


@pytest.mark.parametrize("name", MODELS)
def test_cnncli_cam_one_image(name):
    import cnncli

    d = _fixture(name)
    res = cnncli.cam(str(FIXTURES / f"{name}.onnx"), d["x"][1:2], layer=str(d["layer_tensor"]),
                     classes=[int(c) for c in d["classes"][1]])
    assert [m.unit for m in res] == d["classes"][1].tolist()
    assert all(m.map.dtype == np.float32 for m in res)
    assert relative(np.stack([m.map for m in res]), d["map_gradcam"][1]) <= RTOL


@pytest.mark.parametrize("name", ["small_torchscript", "small_dynamo", "densenet_tiny_dynamo"])
def test_upsampled_map_equals_what_pytorch_grad_cam_returns(name):
    """The map min-max scaled and upsampled to the input (the PNGs' map) is what
    ``GradCAM(model, [layer])(x, targets)`` returns (OpenCV's bilinear resize)."""
    engine, d, _ = _engine(name, "gradcam")
    classes = d["classes"].tolist()
    result = engine.run(d["x"], lambda out: classes)
    from cnncli.engine.cam import upsampled

    got = upsampled(result.maps, d["x"].shape[2:])
    assert np.abs(got - d["scaled_gradcam"]).max() <= 1e-4  # both in [0, 1]


def test_reverse_graph_stops_at_a_layer_that_a_branch_bypasses():
    """build_reverse(stop_at=A): the signal flows only through what depends on A; a branch from the
    input that bypasses A (B) is read as its forward value. Seeded with ones at WAB = W ⊙ A ⊙ B,
    A = Relu(x ⊙ s), B = x ⊙ t: the signal at A is ∂(Σ WAB)/∂A = W ⊙ B, exactly."""
    from onnx import TensorProto, helper, numpy_helper

    from cnncli.api.sources import open_with_image
    from cnncli.engine.project import Projector

    rng = np.random.default_rng(0)
    shape = [1, 2, 3, 4]
    s, t, w = (rng.standard_normal(shape).astype(np.float32) for _ in range(3))
    nodes = [helper.make_node("Mul", ["x", "s"], ["xs"]), helper.make_node("Relu", ["xs"], ["A"]),
             helper.make_node("Mul", ["x", "t"], ["B"]), helper.make_node("Mul", ["A", "B"], ["AB"]),
             helper.make_node("Mul", ["AB", "w"], ["WAB"]), helper.make_node("Add", ["WAB", "A"], ["S"]),
             helper.make_node("ReduceSum", ["S"], ["y"], keepdims=0)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
                              [numpy_helper.from_array(v, n) for v, n in ((s, "s"), (t, "t"), (w, "w"))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    x = rng.standard_normal(shape).astype(np.float32)
    m, _ = open_with_image(model, x)
    p = Projector(m.model, m.graph, m.input_name, "WAB", "backprop", stop_at="A")
    fwd = p.forward(x)
    grad = p.run_reverse(np.ones((1, *shape[1:]), np.float32), fwd)
    np.testing.assert_allclose(grad[0], (w * x * t)[0], rtol=1e-6)
    np.testing.assert_allclose(fwd["A"], np.maximum(x * s, 0))
    assert "B" in p.reverse.needed and "x" not in p.reverse.needed


@pytest.mark.parametrize("name", ["small_torchscript", "small_dynamo"])
def test_guided_gradcam_is_the_upsampled_map_times_guided_backprop(name):
    """Guided Grad-CAM as pytorch-grad-cam's example makes it: its cam(x, targets) output times
    its guided backprop, here through ``cnncli.cam(..., guided=True)``."""
    import cnncli

    d = _fixture(name)
    for i in range(len(d["x"])):
        m = cnncli.cam(str(FIXTURES / f"{name}.onnx"), d["x"][i:i + 1], layer=str(d["layer_tensor"]),
                       classes=int(d["classes"][i, 0]), guided=True)[0]
        want = d["scaled_gradcam"][i, 0][None] * d["guided"][i]
        assert relative(m.guided_cam(), want) <= RTOL
