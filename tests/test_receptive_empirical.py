"""Receptive fields hold empirically: a unit's value depends on the pixels inside its box
(`cnncli.costs.receptive`) and on no pixel outside it, checked by running the model in onnxruntime.

For each unit: randomise every pixel outside the box → the unit is unchanged; randomise the pixels
inside → it changes; and the box is tight: randomising only one of its edge rows or columns
(where that edge is not clipped by the image border) changes it in at least one trial.

Sizes on the ZF paper network are checked against the hand computation of the paper's Fig. 3.
"""

from __future__ import annotations

import zlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from cnncli.frontend.graph import analyse
from cnncli.costs.receptive import AxisRF, receptive_fields
from helpers import ZFNET_PAPER


def _f32(name, arr) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name)


def _model(nodes, x_shape, outputs, inits) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "rf", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="cnncli-tests")
    model.ir_version = 8
    return model


def tiny_model() -> onnx.ModelProto:
    """The `cnn top` test geometry: conv 5x5 s1 → relu → pool 2x2/2 → conv 3x3 pad 1 → relu, 32x32."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], kernel_shape=[5, 5]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "W2", "B2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
    ]
    inits = [_f32("W1", rng.normal(0, 0.2, (8, 3, 5, 5))), _f32("B1", rng.normal(0, 0.1, 8)),
             _f32("W2", rng.normal(0, 0.3, (6, 8, 3, 3))), _f32("B2", rng.normal(0, 0.1, 6))]
    return _model(nodes, ["N", 3, 32, 32], ["c1", "r1", "p1", "c2", "r2"], inits)


def strided_dilated_model() -> onnx.ModelProto:
    """x 30x30 → Pad (top 2, left 1, bottom 1, right 2) 33x33 → conv 3x3 s2 pad 1 (17) → relu
    → conv 3x3 dilation 2 pad 2 (17) → relu → maxpool 3x3 s2 pad 1 (9) → conv 3x3 pads top 1,
    left 0, bottom 0, right 1 (8x8).

    By hand, per axis (size, jump, start) for y | x:
      pad  (1, 1, −2) | (1, 1, −1)
      c1   (3, 2, −3) | (3, 2, −2)
      c2   (3 + 2·2·2 = 11, 2, −7) | (11, 2, −6)
      p    (11 + 2·2 = 15, 4, −9) | (15, 4, −8)
      c3   (15 + 2·4 = 23, 4, −13) | (23, 4, −8)
    """
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("Pad", ["x", "pads"], ["xp"], mode="constant"),
        helper.make_node("Conv", ["xp", "W1", "B1"], ["c1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "W2"], ["c2"], kernel_shape=[3, 3], dilations=[2, 2], pads=[2, 2, 2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["p", "W3"], ["c3"], kernel_shape=[3, 3], pads=[1, 0, 0, 1]),
    ]
    inits = [numpy_helper.from_array(np.array([0, 0, 2, 1, 0, 0, 1, 2], np.int64), "pads"),
             _f32("W1", rng.normal(0, 0.4, (4, 2, 3, 3))), _f32("B1", rng.normal(0, 0.1, 4)),
             _f32("W2", rng.normal(0, 0.4, (4, 4, 3, 3))), _f32("W3", rng.normal(0, 0.4, (3, 4, 3, 3)))]
    return _model(nodes, [1, 2, 30, 30], ["c1", "c2", "p", "c3"], inits)


def branch_model() -> onnx.ModelProto:
    """Two branches merged by Add: conv 3x3 pad 1 and conv 5x5 pad 2 (both 20x20), then conv 3x3 s2.
    Merged: the union, size 5, start −2; then size 5 + 2 = 7, jump 2, start −2."""
    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("Conv", ["x", "Wa"], ["a"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "Wb"], ["b"], kernel_shape=[5, 5], pads=[2, 2, 2, 2]),
        helper.make_node("Add", ["a", "b"], ["s"]),
        helper.make_node("Conv", ["s", "Wc"], ["y"], kernel_shape=[3, 3], strides=[2, 2]),
    ]
    inits = [_f32("Wa", rng.normal(size=(3, 1, 3, 3))), _f32("Wb", rng.normal(size=(3, 1, 5, 5))),
             _f32("Wc", rng.normal(size=(2, 3, 3, 3)))]
    return _model(nodes, [1, 1, 20, 20], ["s", "y"], inits)


MODELS = {"tiny": tiny_model, "strided": strided_dilated_model, "branch": branch_model}

# (model, tensor, hand-computed (size, jump, start) per axis)
HAND = [
    ("tiny", "c1", [(5, 1, 0), (5, 1, 0)]),
    ("tiny", "r1", [(5, 1, 0), (5, 1, 0)]),
    ("tiny", "p1", [(6, 2, 0), (6, 2, 0)]),
    ("tiny", "c2", [(10, 2, -2), (10, 2, -2)]),
    ("tiny", "r2", [(10, 2, -2), (10, 2, -2)]),
    ("strided", "c1", [(3, 2, -3), (3, 2, -2)]),
    ("strided", "c2", [(11, 2, -7), (11, 2, -6)]),
    ("strided", "p", [(15, 4, -9), (15, 4, -8)]),
    ("strided", "c3", [(23, 4, -13), (23, 4, -8)]),
    ("branch", "s", [(5, 1, -2), (5, 1, -2)]),
    ("branch", "y", [(7, 2, -2), (7, 2, -2)]),
]


@pytest.fixture(scope="module")
def built():
    out = {}
    for name, make in MODELS.items():
        model = make()
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        out[name] = (model, analyse(model), session)
    return out


@pytest.mark.parametrize("name,tensor,hand", HAND)
def test_hand_computed(built, name, tensor, hand):
    _, graph, _ = built[name]
    rf = receptive_fields(graph)[tensor]
    assert [(a.size, a.jump, a.start) for a in rf] == hand


# (model, tensor, units (y, x)): corners (clipped boxes), the interior, off-centre positions
EMPIRICAL = [
    ("tiny", "c1", [(0, 0), (27, 27), (13, 6), (3, 25)]),
    ("tiny", "r1", [(10, 17)]),
    ("tiny", "c2", [(0, 0), (13, 13), (6, 7), (1, 12), (12, 2)]),
    ("tiny", "r2", [(6, 7), (0, 13)]),
    ("strided", "c2", [(0, 0), (8, 8), (16, 3)]),
    ("strided", "c3", [(0, 0), (7, 7), (3, 4), (5, 1), (1, 6)]),
    ("branch", "y", [(0, 0), (8, 8), (4, 3)]),
]


def _unit(session, tensor, x, c, y, xx) -> float:
    return float(session.run([tensor], {"x": x})[0][0, c, y, xx])


@pytest.mark.parametrize("name,tensor,units", EMPIRICAL)
def test_only_pixels_inside_the_box_matter(built, name, tensor, units):
    model, graph, session = built[name]
    rf = receptive_fields(graph)[tensor]
    _, channels, h, w = graph.shape("x")
    n_out = graph.shape(tensor)[1]
    rng = np.random.default_rng(zlib.crc32(f"{name}/{tensor}".encode()))
    pre_activation = not tensor.startswith("r")
    for y, xx in units:
        (y0, y1), (x0, x1) = rf[0].box(y, h), rf[1].box(xx, w)
        assert 0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w
        inside = np.zeros((h, w), bool)
        inside[y0:y1, x0:x1] = True
        for c in range(n_out):
            base = rng.uniform(0, 1, (1, channels, h, w)).astype(np.float32)
            v0 = _unit(session, tensor, base, c, y, xx)
            # pixels outside the box: no effect, however large the change
            for _ in range(3):
                x = base.copy()
                x[:, :, ~inside] = rng.uniform(-5, 5, (channels, int((~inside).sum()))).astype(np.float32)
                assert _unit(session, tensor, x, c, y, xx) == pytest.approx(v0, rel=1e-5, abs=1e-5), \
                    f"{tensor}[{c},{y},{xx}] moved when pixels outside {y0}:{y1},{x0}:{x1} changed"
            # pixels inside the box: some change moves the unit
            changed = []
            for _ in range(6):
                x = base.copy()
                x[:, :, inside] = rng.uniform(-5, 5, (channels, int(inside.sum()))).astype(np.float32)
                changed.append(abs(_unit(session, tensor, x, c, y, xx) - v0) > 1e-3)
            if pre_activation or c == 0:
                assert any(changed), f"{tensor}[{c},{y},{xx}] never changed with its box randomised"
            # tightness: each unclipped edge row/column of the box matters
            if not pre_activation:
                continue
            (ly0, ly1), (lx0, lx1) = rf[0].box(y), rf[1].box(xx)
            edges = []
            if ly0 >= 0:
                edges.append((slice(ly0, ly0 + 1), slice(x0, x1)))
            if ly1 <= h:
                edges.append((slice(ly1 - 1, ly1), slice(x0, x1)))
            if lx0 >= 0:
                edges.append((slice(y0, y1), slice(lx0, lx0 + 1)))
            if lx1 <= w:
                edges.append((slice(y0, y1), slice(lx1 - 1, lx1)))
            for ys, xs in edges:
                moved = False
                for _ in range(12):
                    x = base.copy()
                    x[:, :, ys, xs] = rng.uniform(-8, 8, x[:, :, ys, xs].shape).astype(np.float32)
                    if abs(_unit(session, tensor, x, c, y, xx) - v0) > 1e-4:
                        moved = True
                        break
                assert moved, f"{tensor}[{c},{y},{xx}]: the box edge {ys},{xs} never mattered (box too big)"


def test_box_clipping():
    a = AxisRF(size=10, jump=2, start=-2)
    assert a.box(0) == (-2, 8) and a.box(0, 32) == (0, 8)
    assert a.box(13) == (24, 34) and a.box(13, 32) == (24, 32)
    assert a.box(5, 32) == (8, 18)


def test_zfnet_paper_sizes():
    """Zeiler & Fergus Fig. 3, by hand (size, jump, start):
    conv1 7x7/2 pad 1: (7, 2, −1); pool1 3/2: (11, 4, −1); conv2 5x5/2: (11 + 4·4 = 27, 8, −1);
    pool2 3/2: (43, 16, −1); conv3 3x3 pad 1: (43 + 2·16 = 75, 16, −17); conv4: (107, 16, −33);
    conv5: (139, 16, −49)."""
    from cnncli.frontend.load import load_model
    from cnncli.engine.targets import by_layer

    graph = analyse(load_model(str(ZFNET_PAPER)).model)
    rf = receptive_fields(graph)
    expected = [(7, 2, -1), (27, 8, -1), (75, 16, -17), (107, 16, -33), (139, 16, -49)]
    for layer, want in enumerate(expected, start=1):
        target = by_layer(graph, layer).tensor
        assert target == f"conv{layer}_relu"
        for axis in rf[target]:
            assert (axis.size, axis.jump, axis.start) == want, f"conv{layer}"
        assert rf[f"conv{layer}"] == rf[target]  # the conv's own output and its block output agree


def channels_last_model() -> onnx.ModelProto:
    """A Keras-shaped input as tf2onnx writes it: x [1, 32, 32, 3] (NHWC) → Pad in NHWC (top 2,
    left 1, bottom 1, right 2) → Transpose to NCHW → conv 3x3 s2 → relu → Transpose back to NHWC
    → Add of a per-channel constant → Pad in NHWC (1 all round) → Transpose to NCHW → conv 3x3.

    By hand, per axis (size, jump, start) y | x: the pad (1, 1, −2) | (1, 1, −1); c1 (3, 2, −2) |
    (3, 2, −1); the second pad moves the start by one jump: (3, 2, −4) | (3, 2, −3); c2 adds
    2 jumps to the size: (7, 2, −4) | (7, 2, −3)."""
    rng = np.random.default_rng(3)
    i64 = lambda name, v: numpy_helper.from_array(np.asarray(v, dtype=np.int64), name)  # noqa: E731
    nodes = [
        helper.make_node("Pad", ["x", "pads1"], ["p1"]),
        helper.make_node("Transpose", ["p1"], ["t1"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["t1", "W1", "B1"], ["c1"], kernel_shape=[3, 3], strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Transpose", ["r1"], ["h1"], perm=[0, 2, 3, 1]),
        helper.make_node("Add", ["h1", "shift"], ["a1"]),
        helper.make_node("Pad", ["a1", "pads2"], ["p2"]),
        helper.make_node("Transpose", ["p2"], ["t2"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["t2", "W2", "B2"], ["c2"], kernel_shape=[3, 3]),
    ]
    inits = [i64("pads1", [0, 2, 1, 0, 0, 1, 2, 0]), i64("pads2", [0, 1, 1, 0, 0, 1, 1, 0]),
             _f32("W1", rng.normal(0, 0.3, (6, 3, 3, 3))), _f32("B1", rng.normal(0, 0.1, 6)),
             _f32("shift", rng.normal(0, 0.1, (1, 1, 1, 6))),
             _f32("W2", rng.normal(0, 0.3, (4, 6, 3, 3))), _f32("B2", rng.normal(0, 0.1, 4))]
    return _model(nodes, [1, 32, 32, 3], ["c1", "c2"], inits)


def test_channels_last_stretches_are_followed():
    """Through an NHWC input, NHWC Pads and Adds and the Transposes between the layouts: the
    boxes by hand, and empirically (pixels outside a unit's box never move it, its box does)."""
    model = channels_last_model()
    graph = analyse(model, batch=1)
    rf = receptive_fields(graph)
    assert rf["c1"] == (AxisRF(3, 2, -2), AxisRF(3, 2, -1))
    assert rf["c2"] == (AxisRF(7, 2, -4), AxisRF(7, 2, -3))
    assert not {"x", "p1", "h1", "a1", "p2"} & set(rf)  # channels-last tensors: followed, not returned
    last: dict = {}
    receptive_fields(graph, None, last)
    assert last["a1"] == (AxisRF(3, 2, -2), AxisRF(3, 2, -1)) and last["p2"] == (AxisRF(3, 2, -4), AxisRF(3, 2, -3))
    import cnncli  # the stats RF column shows them

    by_op = {r.op: r for r in cnncli.stats(model).layers}
    assert by_op["Add"].rf == [3, 3]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(7)
    for tensor, (y, xx) in (("c1", (0, 0)), ("c1", (8, 5)), ("c2", (0, 16)), ("c2", (9, 4))):
        (y0, y1), (x0, x1) = rf[tensor][0].box(y, 32), rf[tensor][1].box(xx, 32)
        inside = np.zeros((32, 32), bool)
        inside[y0:y1, x0:x1] = True
        base = rng.uniform(0, 1, (1, 32, 32, 3)).astype(np.float32)
        v0 = session.run([tensor], {"x": base})[0][0, :, y, xx]
        x = base.copy()
        x[0, ~inside] = rng.uniform(-5, 5, (int((~inside).sum()), 3)).astype(np.float32)
        np.testing.assert_allclose(session.run([tensor], {"x": x})[0][0, :, y, xx], v0, rtol=1e-5, atol=1e-5)
        x = base.copy()
        x[0, inside] = rng.uniform(-5, 5, (int(inside.sum()), 3)).astype(np.float32)
        assert np.abs(session.run([tensor], {"x": x})[0][0, :, y, xx] - v0).max() > 1e-3


def test_a_channels_last_input_leaves_channels_first_merges_alone():
    """In a model with a channels-last input, a channels-first Add whose first operand is a
    constant (or untracked) still carries the field of its other operand."""
    rng = np.random.default_rng(4)
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["t", "W1"], ["c1"], kernel_shape=[3, 3]),
             helper.make_node("Add", ["shift", "c1"], ["a"]),
             helper.make_node("Conv", ["a", "W2"], ["c2"], kernel_shape=[3, 3])]
    inits = [_f32("W1", rng.normal(0, 0.3, (4, 3, 3, 3))), _f32("shift", rng.normal(0, 0.1, (1, 4, 1, 1))),
             _f32("W2", rng.normal(0, 0.3, (2, 4, 3, 3)))]
    rf = receptive_fields(analyse(_model(nodes, [1, 16, 16, 3], ["c2"], inits), batch=1))
    assert rf["a"] == rf["c1"] == (AxisRF(3, 1, 0), AxisRF(3, 1, 0))
    assert rf["c2"] == (AxisRF(5, 1, 0), AxisRF(5, 1, 0))
