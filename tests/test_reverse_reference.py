"""The three reverse modes against an independent numpy implementation (numpy_deconv.py), and the
properties the paper's method rests on: overlapping max-pool windows add their signals at a shared
switch, batching channels changes nothing, keep='max' seeds one unit, and the modes really differ.
"""

from __future__ import annotations

import numpy as np
import numpy_deconv as ND
import onnx
import onnxruntime as ort
import pytest
import reverse_models as RM
from onnx import TensorProto, helper

from cnncli.frontend.graph import analyse
from cnncli.engine.project import Projector

MODES = ("deconvnet", "backprop", "guided")
CHAINS = {"zf": RM.chain_zf, "classifier": RM.chain_classifier, "conv_relu": RM.chain_conv_relu,
          "transform": RM.chain_transform, "convnext": RM.chain_convnext,
          "convnext_erf": lambda: RM.chain_convnext(approximate="none")}
OPSETS = {"convnext": 20}  # Gelu is an opset-20 op; convnext_erf writes it with Erf at opset 17


def _close(got, want, rtol=1e-4):
    """rtol per value, with an absolute floor scaled to the largest magnitude."""
    want = np.asarray(want, dtype=np.float64)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(np.abs(want).max(), 1e-30))


@pytest.fixture(scope="module")
def chains():
    cache = {}

    def get(name):
        if name not in cache:
            layers, shape = CHAINS[name]()
            model, target = RM.chain_model(layers, shape, OPSETS.get(name, 17))
            x = np.random.default_rng(4).standard_normal(shape).astype(np.float32)
            cache[name] = (layers, model, target, analyse(model), x, ND.forward(layers, x))
        return cache[name]

    return get


def _projector(model, graph, target, mode):
    return Projector(model, graph, "x", target, mode)


# ---------------------------------------------------------------- the reference itself


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_numpy_forward_matches_onnxruntime(name, chains):
    """The reference's activations (every layer, and the pooling switches' values) equal onnxruntime's."""
    layers, model, _target, _, x, records = chains(name)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    names = [f"t{i}" for i in range(len(layers))]  # each layer's output (a layer may be several nodes)
    del m.graph.output[:]
    m.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names)
    ort.set_default_logger_severity(3)
    outs = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(names, {"x": x})
    assert len(outs) == len(records)
    for L, got, rec in zip(layers, outs, records):
        assert got.shape == rec["output"].shape, L["op"]
        _close(got, rec["output"], rtol=1e-5)
        if L["op"] == "maxpool":  # the switch holds the window's value
            sw = rec["switches"]
            picked = rec["input"][0][np.arange(got.shape[1])[:, None, None], sw[0, ..., 0], sw[0, ..., 1]]
            np.testing.assert_array_equal(picked, rec["output"][0])


def _reference_is_gradient(layers, shape, channel):
    x = np.random.default_rng(8).standard_normal(shape)
    recs = ND.forward(layers, x)
    seed = ND.seeds(recs[-1]["output"], [channel], "map")
    grad = ND.project(layers, recs, seed, "backprop")[0]
    assert np.abs(grad).max() > 0
    rng = np.random.default_rng(9)
    for _ in range(3):
        v = rng.standard_normal(shape)
        eps = 1e-5
        lp = 0.5 * np.sum(ND.forward(layers, x + eps * v)[-1]["output"][0, channel] ** 2)
        lm = 0.5 * np.sum(ND.forward(layers, x - eps * v)[-1]["output"][0, channel] ** 2)
        np.testing.assert_allclose((lp - lm) / (2 * eps), np.sum(grad * v[0]), rtol=1e-6)


def test_numpy_reference_backprop_is_a_gradient():
    """The reference's backprop (LRN and avg-pool included) is the gradient of its own forward,
    by float64 central differences: so the LRN and pooling transposes are right before they judge."""
    layers, shape = RM.chain_zf()
    layers = layers + [{"op": "avgpool", "kernel": (2, 2), "strides": (1, 1), "pads": (1, 0, 0, 1), "count_include_pad": 0}]
    _reference_is_gradient(layers, shape, 2)


@pytest.mark.parametrize("name", ["transform", "convnext", "convnext_erf"])
def test_numpy_reference_new_layers_are_gradients(name):
    """The same for the channel picks, chunk, ReLU6, grouped conv, LayerNorm and GELU layers."""
    _reference_is_gradient(*CHAINS[name](), 1)


# ---------------------------------------------------------------- Projector against the reference


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(CHAINS))
def test_projection_matches_numpy_reference(name, mode, chains):
    layers, model, target, graph, x, records = chains(name)
    act = records[-1]["output"]
    channels = list(range(act.shape[1]))
    want = ND.project(layers, records, ND.seeds(act, channels, "map"), mode)
    res = _projector(model, graph, target, mode).project(x, channels, keep="map")
    got = np.stack([r.projection for r in res])
    assert got.shape == want.shape
    _close(got, want)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["zf", "classifier"])
def test_keep_max_matches_numpy_reference(name, mode, chains):
    layers, model, target, graph, x, records = chains(name)
    act = records[-1]["output"]
    channels = [0, act.shape[1] - 1]
    want = ND.project(layers, records, ND.seeds(act, channels, "max"), mode)
    got = np.stack([r.projection for r in _projector(model, graph, target, mode).project(x, channels, keep="max")])
    _close(got, want)


# ---------------------------------------------------------------- (a) overlapping max pooling


def _pool_model(shape, **pool):
    node = helper.make_node("MaxPool", ["x"], ["y"], **pool)
    graph = helper.make_graph([node], "pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("pads,peak,windows", [
    ([0, 0, 0, 0], (2, 2), [(0, 0), (0, 1), (1, 0), (1, 1)]),  # 5x5, 3x3/2: the centre is in all four windows
    ([1, 1, 1, 1], (1, 1), [(0, 0), (0, 1), (1, 0), (1, 1)]),  # 4x4 padded: row/col 1 is in both windows
])
def test_overlapping_windows_add_at_a_shared_switch(mode, pads, peak, windows):
    size = 5 if pads[0] == 0 else 4
    model = _pool_model((1, 2, size, size), kernel_shape=[3, 3], strides=[2, 2], pads=pads)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 2, size, size)).astype(np.float32)
    x[0, 0, peak[0], peak[1]] = 5.0  # channel 0: one value is the max of every window
    p = _projector(model, analyse(model), "y", mode)
    fwd = p.forward(x)
    assert fwd["y"].shape == (1, 2, 2, 2)
    assert (fwd["y"][0, 0] == 5.0).all()

    # arbitrary signals (some negative) into the four windows, two rows at once
    seeds = np.zeros((2, 2, 2, 2), dtype=np.float32)
    seeds[0, 0] = [[1.0, 2.0], [3.0, -0.5]]
    seeds[1, 0] = [[0.25, -4.0], [0.5, 8.0]]
    out = p.run_reverse(seeds, fwd)
    for row in range(2):
        want = np.zeros((2, size, size), dtype=np.float32)
        want[0, peak[0], peak[1]] = sum(seeds[row, 0, i, j] for i, j in windows)
        np.testing.assert_array_equal(out[row], want)

    # and with the paper's seed (the map's own values): four windows of 5 give 20
    (res,) = p.project(x, [0], keep="map")
    assert res.projection[0, peak[0], peak[1]] == pytest.approx(20.0)
    assert np.count_nonzero(res.projection) == 1


# ---------------------------------------------------------------- (b) batched equals one by one


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["zf", "classifier"])
def test_batched_equals_one_by_one(name, mode, chains):
    _, model, target, graph, x, records = chains(name)
    n_channels = records[-1]["output"].shape[1]
    p = _projector(model, graph, target, mode)
    single = {c: p.project(x, [c], keep="map")[0].projection for c in range(n_channels)}
    batched = p.project(x, [0, 1, 2], keep="map")
    for r in batched:
        _close(r.projection, single[r.channel], rtol=1e-6)
    p.max_batch = 2  # more channels than one reverse run takes: chunks of 2, 2, ... rows
    chunked = p.project(x, list(range(n_channels)), keep="map")
    assert [r.channel for r in chunked] == list(range(n_channels))
    for r in chunked:
        _close(r.projection, single[r.channel], rtol=1e-6)
    maxed = p.project(x, list(range(n_channels)), keep="max")
    for r in maxed:
        _close(r.projection, p.project(x, [r.channel], keep="max")[0].projection, rtol=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_one_image_per_row_equals_one_by_one(mode):
    """project_units: row i is projected against image i's own forward pass (switches, masks),
    in chunks of max_batch, and equals projecting that image alone (and the reference)."""
    layers, shape = RM.chain_zf()
    model, target = RM.chain_model(layers, shape)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"  # a batch of images
    graph = analyse(model)
    xs = np.random.default_rng(10).standard_normal((3, *shape[1:])).astype(np.float32)
    p = _projector(model, graph, target, mode)
    units = []
    for i in range(3):
        plane = p.forward(xs[i:i + 1])[target][0, i + 1]
        units.append((i + 1, tuple(int(v) for v in np.unravel_index(int(np.argmax(plane)), plane.shape))))
    p.max_batch = 2
    rows = p.project_units(xs, units)
    assert rows.shape == (3, *shape[1:])
    for i, (c, _) in enumerate(units):
        _close(rows[i], p.project(xs[i:i + 1], [c], keep="max")[0].projection, rtol=1e-6)
        recs = ND.forward(layers, xs[i:i + 1])
        _close(rows[i], ND.project(layers, recs, ND.seeds(recs[-1]["output"], [c], "max"), mode)[0])


# ---------------------------------------------------------------- (c) keep='max' seeds one unit


@pytest.mark.parametrize("name", ["zf", "classifier"])
def test_keep_max_seeds_one_unit(name, chains):
    _, model, target, graph, x, _ = chains(name)
    p = _projector(model, graph, target, "deconvnet")
    act = p.forward(x)[target]
    channels = list(range(act.shape[1]))
    seeds, info = p.seeds(act, channels, "max")
    assert seeds.shape == (len(channels), *act.shape[1:])
    for row, c in enumerate(channels):
        nz = np.argwhere(seeds[row] != 0)
        plane = act[0, c]
        assert len(nz) == 1, f"channel {c}: {len(nz)} non-zero seed values"
        where = tuple(nz[0])
        assert where[0] == c
        assert where[1:] == np.unravel_index(int(np.argmax(plane)), plane.shape)
        assert seeds[row][where] == plane.max()
        assert info[row][0] == pytest.approx(float(plane.max()))
        if plane.ndim:
            assert info[row][1] == list(where[1:])
    map_seeds, _ = p.seeds(act, channels, "map")
    for row, c in enumerate(channels):
        np.testing.assert_array_equal(map_seeds[row, c], act[0, c])
        assert np.count_nonzero(np.delete(map_seeds[row], c, axis=0)) == 0


# ---------------------------------------------------------------- (d) the modes differ, as they should


def test_modes_differ_and_guided_combines_rule_and_mask(chains):
    """Conv→ReLU→Conv→ReLU: the three modes give three different images, each the reference's;
    guided is the deconvnet rule max(R,0) times the forward mask 1[x>0] at the hidden ReLU."""
    layers, model, target, graph, x, records = chains("conv_relu")
    act = records[-1]["output"]
    channels = list(range(act.shape[1]))
    got = {m: np.stack([r.projection for r in _projector(model, graph, target, m).project(x, channels, "map")]) for m in MODES}

    # by hand from the reference's pieces: the signal arriving at the hidden ReLU
    conv1, _, conv2, _ = layers
    seed = ND.seeds(act, channels, "map")
    z = ND.conv_adjoint(seed, conv2, records[2]["input"].shape)  # the top ReLU passes the (≥0) seed unchanged
    hidden_x = records[1]["input"]
    mask = hidden_x > 0
    assert 0.2 < mask.mean() < 0.8 and (z < 0).mean() > 0.2  # both the rule and the mask have work to do
    by_hand = {
        "backprop": ND.conv_adjoint(z * mask, conv1, x.shape),
        "deconvnet": ND.conv_adjoint(np.maximum(z, 0), conv1, x.shape),
        "guided": ND.conv_adjoint(np.maximum(z, 0) * mask, conv1, x.shape),
    }
    for m in MODES:
        _close(got[m], by_hand[m])
        _close(got[m], ND.project(layers, records, seed, m))
    for a, b in [("deconvnet", "backprop"), ("guided", "backprop"), ("guided", "deconvnet")]:
        diff = np.linalg.norm(got[a] - got[b]) / np.linalg.norm(got[b])
        assert diff > 0.1, f"{a} and {b} should differ; relative difference {diff:.3g}"


def test_lrn_is_skipped_only_outside_backprop():
    """A single LRN between conv and target: deconvnet and guided pass the signal straight through
    it, backprop differentiates it (the reference's exact Jacobian)."""
    rng = np.random.default_rng(12)
    conv = {"op": "conv", "W": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
            "B": np.zeros(4, np.float32), "strides": (1, 1), "pads": (1, 1, 1, 1)}
    lrn = {"op": "lrn", "size": 3, "alpha": 1.0, "beta": 0.75, "bias": 1.0}
    layers, shape = [conv, lrn], (1, 3, 8, 8)
    model, target = RM.chain_model(layers, shape)
    x = rng.standard_normal(shape).astype(np.float32)
    recs = ND.forward(layers, x)
    seed = ND.seeds(recs[-1]["output"], [1], "map")
    graph = analyse(model)
    out = {m: _projector(model, graph, target, m).project(x, [1], "map")[0].projection for m in MODES}
    np.testing.assert_array_equal(out["deconvnet"], out["guided"])  # no ReLU: same rule
    _close(out["deconvnet"], ND.conv_adjoint(seed, conv, shape)[0])
    _close(out["backprop"], ND.project(layers, recs, seed, "backprop")[0])
    assert np.linalg.norm(out["backprop"] - out["deconvnet"]) > 0.1 * np.linalg.norm(out["deconvnet"])


# ---------------------------------------------------------------- the ReLU family, rule by rule


def _act_model(op, shape, inputs=(), inits=(), opset=17, **attrs):
    node = helper.make_node(op, ["x", *inputs], ["y"], **attrs)
    graph = helper.make_graph([node], "act", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], list(inits))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8 if opset >= 13 else 7
    return m


def _num(name, value):
    return onnx.numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)


SLOPE = np.array([0.1, -0.3, 0.5], np.float32).reshape(3, 1, 1)

# name: (model builder, f(R) for deconvnet, f'(x))  — from the definitions
FAMILY = {
    "Relu": (lambda s: _act_model("Relu", s), lambda R: np.maximum(R, 0), lambda x: (x > 0) * 1.0),
    "LeakyRelu": (lambda s: _act_model("LeakyRelu", s, alpha=0.1),
                  lambda R: np.where(R > 0, R, 0.1 * R), lambda x: np.where(x > 0, 1.0, 0.1)),
    "PRelu": (lambda s: _act_model("PRelu", s, ["slope"], [_num("slope", SLOPE)]),
              lambda R: np.where(R > 0, R, SLOPE * R), lambda x: np.where(x > 0, 1.0, SLOPE)),
    "Clip(0,6)": (lambda s: _act_model("Clip", s, ["lo", "hi"], [_num("lo", 0.0), _num("hi", 6.0)]),
                  lambda R: np.maximum(R, 0), lambda x: ((x > 0) & (x < 6)) * 1.0),
    "Clip(0,)": (lambda s: _act_model("Clip", s, ["lo"], [_num("lo", 0.0)]),
                 lambda R: np.maximum(R, 0), lambda x: (x > 0) * 1.0),
    "Clip-6 attributes (0,6)": (lambda s: _act_model("Clip", s, opset=6, min=0.0, max=6.0),
                                lambda R: np.maximum(R, 0), lambda x: ((x > 0) & (x < 6)) * 1.0),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(FAMILY))
def test_relu_family_rule(name, mode):
    """backprop R·f'(x), deconvnet f(R), guided f(R)·f'(x), on signed signals of both signs."""
    build, f, df = FAMILY[name]
    shape = (1, 3, 6, 6)
    rng = np.random.default_rng(5)
    x = (4 * rng.standard_normal(shape)).astype(np.float32)  # reaches past 6 and below 0
    model = build(shape)
    p = _projector(model, analyse(model), "y", mode)
    R = rng.standard_normal((2, *shape[1:])).astype(np.float32)
    got = p.run_reverse(R, p.forward(x))
    want = {"backprop": R * df(x[0]), "deconvnet": f(R), "guided": f(R) * df(x[0])}[mode]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("mode", MODES)
def test_clip_with_a_negative_min_is_exact_in_every_mode(mode):
    """Clip(-1, 1) is not a rectifier: every mode passes R·1[-1 < x < 1]."""
    shape = (1, 3, 6, 6)
    rng = np.random.default_rng(6)
    x = (2 * rng.standard_normal(shape)).astype(np.float32)
    model = _act_model("Clip", shape, ["lo", "hi"], [_num("lo", -1.0), _num("hi", 1.0)])
    p = _projector(model, analyse(model), "y", mode)
    R = rng.standard_normal((2, *shape[1:])).astype(np.float32)
    got = p.run_reverse(R, p.forward(x))
    np.testing.assert_array_equal(got, R * ((x[0] > -1) & (x[0] < 1)))
