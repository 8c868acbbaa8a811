"""Backprop mode is the exact gradient: it must equal finite differences of the forward model.

The seed is the kept activations' own values, so the backprop projection of channel c (keep='map')
is the gradient of L(x) = ½·Σ a_c(x)² over channel c's map. L is evaluated with plain
onnxruntime runs of the model itself (no cnncli code), by central differences:

    L(x + εd) − L(x − εd) = ½·Σ (a₊ − a₋)(a₊ + a₋)     (summed in float64)

onnxruntime's CPU kernels for Conv, pooling, LRN and Resize are float32 only, so the forward runs
are float32. Two errors then compete: rounding noise (grows as ε shrinks) and kinks of ReLU,
Clip, MaxPool switches crossed by the step (grow with ε). A position passes when the difference
quotient agrees at any of a few step sizes; a wrong rule (a dropped term, a wrong factor or mask)
disagrees at all of them.
"""

from __future__ import annotations

import zlib
from fractions import Fraction

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import reverse_models as RM
import reverse_models_llm as LLM
from onnx import numpy_helper

from cnncli.errors import ModelError
from cnncli.frontend.graph import analyse
from cnncli.engine.project import Projector

ORT_ERRORS = (ort.capi.onnxruntime_pybind11_state.Fail, ort.capi.onnxruntime_pybind11_state.InvalidArgument,
              ort.capi.onnxruntime_pybind11_state.RuntimeException, ort.capi.onnxruntime_pybind11_state.NotImplemented)
CASES = {**RM.CASES, **LLM.CASES}  # (issue 16's transformer, loss, copy and spectral cases in reverse_models_llm.py)
EPSILONS = (3e-3, 1e-3, 1e-2, 3e-2)  # one-sided quotients use the first two only
RTOL = 1e-2
ATOL_OF_MAX = 1e-2  # absolute tolerance per position, as a fraction of max |gradient|


class Objective:
    """½·Σ a_c² for one channel of the target, from onnxruntime forward runs."""

    def __init__(self, case: RM.Case, channel: int):
        ort.set_default_logger_severity(3)
        self.session = ort.InferenceSession(case.model.SerializeToString(), providers=["CPUExecutionProvider"])
        self.target, self.channel = case.target, channel

    def act(self, x: np.ndarray) -> np.ndarray:
        a = self.session.run([self.target], {"x": x.astype(np.float32)})[0]
        return a[0, self.channel].astype(np.float64)

    def differences(self, x: np.ndarray, d: np.ndarray, eps: float, one_sided: bool = False) -> list[float]:
        """The central difference quotient of L along d, or the forward and backward ones."""
        ap, am = self.act(x + eps * d), self.act(x - eps * d)

        def delta(a1, a2):  # L(a1) − L(a2) without cancellation
            return float(0.5 * np.sum((a1 - a2) * (a1 + a2)))

        if not one_sided:
            return [delta(ap, am) / (2 * eps)]
        a0 = self.act(x)
        return [delta(ap, a0) / eps, delta(a0, am) / eps]


def _agrees(obj: Objective, x, d, expected: float, tol: float) -> tuple[bool, list[float]]:
    """Whether some step size gives a difference quotient within tol of ``expected``. The central
    one is tried first; a one-sided one counts too, because when a kink (ReLU, Clip, a max-pool
    switch) lies closer to x than the step, only the side without it measures f'(x)."""
    tried = []
    for eps in EPSILONS:
        (central,) = obj.differences(x, d, eps)
        tried.append(round(central, 6))
        if abs(central - expected) <= tol:
            return True, tried
    for eps in EPSILONS[:2]:
        forward, backward = obj.differences(x, d, eps, one_sided=True)
        tried += [round(forward, 6), round(backward, 6)]
        if min(abs(forward - expected), abs(backward - expected)) <= tol:
            return True, tried
    return False, tried


def _positions(grad: np.ndarray, rng) -> np.ndarray:
    """15 random input positions and 15 random ones among those with a sizeable gradient."""
    flat = np.abs(grad).reshape(-1)
    anywhere = rng.choice(flat.size, 15, replace=False)
    strong = np.flatnonzero(flat > 0.1 * flat.max())
    strong = rng.choice(strong, min(15, strong.size), replace=False)
    return np.unique(np.concatenate([anywhere, strong]))


def _case_params():
    return [pytest.param(name, id=name) for name in CASES]


@pytest.fixture(scope="module")
def built():
    cache = {}

    def get(name):
        if name not in cache:
            case = CASES[name]()
            cache[name] = (case, analyse(case.model))
        return cache[name]

    return get


@pytest.mark.parametrize("name", _case_params())
def test_backprop_equals_finite_differences(name, built):
    case, graph = built(name)
    x = case.input(seed=1)
    projector = Projector(case.model, graph, "x", case.target, "backprop")
    results = projector.project(x, case.channels, keep="map")
    assert [r.channel for r in results] == case.channels
    rng = np.random.default_rng(7)
    for result in results:
        c = result.channel
        grad = result.projection.astype(np.float64)
        assert grad.shape == x.shape[1:]
        obj = Objective(case, c)
        assert np.abs(obj.act(x)).max() > 0, f"channel {c} of {case.target} is dead: the check would be empty"
        assert np.abs(grad).max() > 0
        check_gradient(obj, x, grad, rng, f"{name} channel {c}")


def check_gradient(obj: Objective, x: np.ndarray, grad: np.ndarray, rng, label: str) -> None:
    """``grad`` (one input row) is the gradient of ``obj`` at x: the coordinate derivatives at ~30
    positions, then the derivative along one random direction (every input position at once)."""
    gmax = np.abs(grad).max()
    bad = []
    for q in _positions(grad, rng):
        d = np.zeros(x.shape)
        d.flat[q] = 1.0
        g = grad.reshape(-1)[q]
        ok, tried = _agrees(obj, x, d, g, ATOL_OF_MAX * gmax + RTOL * abs(g))
        if not ok:
            bad.append((int(q), float(g), tried))
    assert not bad, f"{label}: projection vs finite differences (position, value, tried): {bad[:5]}"
    v = rng.standard_normal(x.shape)
    v /= np.linalg.norm(v)
    gd = float(np.sum(grad * v[0]))
    ok, tried = _agrees(obj, x, v, gd, RTOL * abs(gd) + 1e-3 * np.linalg.norm(grad))
    assert ok, f"{label}: directional derivative {gd} vs finite differences {tried}"


@pytest.mark.parametrize("name", _case_params())
def test_keep_max_is_gradient_of_one_unit(name, built):
    """keep='max' seeds one unit a* (the strongest of the channel): the projection is ∇ ½·a*²,
    checked along a random direction."""
    case, graph = built(name)
    x = case.input(seed=2)
    projector = Projector(case.model, graph, "x", case.target, "backprop")
    c = case.channels[-1]
    (result,) = projector.project(x, [c], keep="max")
    grad = result.projection.astype(np.float64)
    obj = Objective(case, c)
    flat = int(np.argmax(obj.act(x)))

    class Unit(Objective):
        def act(self, x):
            return super().act(x).reshape(-1)[flat:flat + 1]

    unit = Unit(case, c)
    rng = np.random.default_rng(11)
    v = rng.standard_normal(x.shape)
    v /= np.linalg.norm(v)
    gd = float(np.sum(grad * v[0]))
    ok, tried = _agrees(unit, x, v, gd, RTOL * abs(gd) + 1e-3 * np.linalg.norm(grad))
    assert ok, f"{name}: keep='max' directional derivative {gd} vs finite differences {tried}"


@pytest.mark.parametrize("name", _case_params())
def test_all_modes_run(name, built):
    """deconvnet and guided run on every case and give one input-shaped, finite row per channel;
    on a case without ReLU-family activations or LRN the three modes are the same linear map."""
    case, graph = built(name)
    x = case.input(seed=3)
    out = {}
    for mode in ("deconvnet", "guided", "backprop"):
        res = Projector(case.model, graph, "x", case.target, mode).project(x, case.channels, keep="map")
        out[mode] = np.stack([r.projection for r in res])
        assert out[mode].shape == (len(case.channels), *x.shape[1:])
        assert np.isfinite(out[mode]).all()
    if not case.ops & {"Relu", "LeakyRelu", "PRelu", "Clip", "LRN"}:
        scale = np.abs(out["backprop"]).max()
        np.testing.assert_allclose(out["deconvnet"], out["backprop"], rtol=1e-5, atol=1e-6 * scale)
        np.testing.assert_allclose(out["guided"], out["backprop"], rtol=1e-5, atol=1e-6 * scale)


def test_cases_cover_every_reverse_rule():
    """The cases together use every op cnncli/reverse/ has a rule for."""
    from cnncli.reverse import RULES

    used = set()
    for f in CASES.values():
        used |= f().ops
    assert set(RULES) - used - set(LLM.UNRUNNABLE) == set()


# ---------------------------------------------------------------- random geometries: the adjoint identity
#
# For an op that is linear at the forward point (Conv and ConvTranspose without bias, the pools,
# Resize), y = A·x, the backprop pass must give Aᵀ·R for any signal R, so
#     Σ R·y(x) = Σ (Aᵀ·R)·x        (the dot-product test; for MaxPool A is the switch selection).
# Checked on many random geometries of one op each: strides, dilations, asymmetric pads,
# auto_pad, groups, output_padding, ceil_mode, count_include_pad, storage_order, Resize modes.


def _one_op_model(op_type, x_shape, inits=(), n_out=1, extra_inputs=(), **attrs):
    outs = ["y"] + [f"y{i}" for i in range(1, n_out)]
    node = onnx.helper.make_node(op_type, ["x", *[t.name for t in inits], *extra_inputs], outs, **attrs)
    graph = onnx.helper.make_graph([node], "one", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(x_shape))],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], list(inits))
    m = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _adjoint_check(model, x_shape, rng):
    """None when onnxruntime rejects the geometry or its output shape differs from the analysed
    one (not a reverse-pass matter), else the relative error of the dot-product test."""
    x = rng.standard_normal(x_shape).astype(np.float32)
    try:
        graph = analyse(model)
    except ModelError:  # a window larger than its padded input: a negative output dim, refused as damage
        return None
    try:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        y = session.run(["y"], {"x": x})[0]
    except ORT_ERRORS:  # onnxruntime rejects some geometries the spec allows (dilated SAME convs, ...)
        return None
    if tuple(y.shape) != tuple(graph.shape("y")):
        return None
    p = Projector(model, graph, "x", "y", "backprop")
    R = rng.standard_normal((2, *y.shape[1:])).astype(np.float32)
    back = p.run_reverse(R, p.forward(x)).astype(np.float64)
    assert back.shape == (2, *x_shape[1:])
    lhs = R.reshape(2, -1).astype(np.float64) @ y.reshape(-1).astype(np.float64)
    rhs = back.reshape(2, -1) @ x.reshape(-1).astype(np.float64)
    scale = np.linalg.norm(R.reshape(2, -1), axis=1) * np.linalg.norm(y) + 1e-12
    return float(np.max(np.abs(lhs - rhs) / scale))


def _sweep(make, n, seed):
    rng = np.random.default_rng(seed)
    done, failures = 0, []
    for _attempt in range(20 * n):
        if done == n:
            break
        try:
            model, shape, desc = make(rng)
            onnx.shape_inference.infer_shapes(model, strict_mode=True)
        except (onnx.shape_inference.InferenceError, ValueError):
            continue  # an invalid random geometry: draw again
        err = _adjoint_check(model, shape, rng)
        if err is None:
            continue
        done += 1
        if err > 1e-5:
            failures.append((desc, err))
    assert done == n, f"only {done} of {n} random geometries were valid"
    assert not failures, failures


def _spatial(rng, lo=4, hi=10):
    return [int(v) for v in rng.integers(lo, hi, 2)]


def _make_conv(rng):
    group = int(rng.choice([1, 1, 2, 3]))
    depthwise = group > 1 and rng.random() < 0.5
    cin = group * (1 if depthwise else int(rng.integers(1, 3)))
    cout = group * int(rng.integers(1, 3))
    k = [int(v) for v in rng.integers(1, 5, 2)]
    d = [int(v) for v in rng.integers(1, 3, 2)]
    attrs = {"strides": [int(v) for v in rng.integers(1, 4, 2)], "dilations": d, "group": group, "kernel_shape": k}
    auto = rng.choice(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"])
    if auto == "NOTSET":
        attrs["pads"] = [int(rng.integers(0, (k[i % 2] - 1) * d[i % 2] + 1)) for i in range(4)]
    else:
        attrs["auto_pad"] = str(auto)
    shape = (1, cin, *_spatial(rng))
    w = numpy_helper.from_array(rng.standard_normal((cout, cin // group, *k)).astype(np.float32), "W")
    return _one_op_model("Conv", shape, [w], **attrs), shape, ("Conv", shape, attrs)


def _make_conv_transpose(rng):
    group = int(rng.choice([1, 1, 2]))
    cin, cout = group * int(rng.integers(1, 3)), group * int(rng.integers(1, 3))
    k = [int(v) for v in rng.integers(1, 5, 2)]
    s = [int(v) for v in rng.integers(1, 4, 2)]
    d = [int(v) for v in rng.integers(1, 3, 2)]
    attrs = {"strides": s, "dilations": d, "group": group}
    auto = rng.choice(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER"])
    if auto == "NOTSET":
        attrs["pads"] = [int(rng.integers(0, (k[i % 2] - 1) * d[i % 2] + 1)) for i in range(4)]
    else:
        attrs["auto_pad"] = str(auto)
    if rng.random() < 0.5:
        attrs["output_padding"] = [int(rng.integers(0, s[i])) for i in range(2)]
    shape = (1, cin, *_spatial(rng, 3, 7))
    w = numpy_helper.from_array(rng.standard_normal((cin, cout // group, *k)).astype(np.float32), "W")
    return _one_op_model("ConvTranspose", shape, [w], **attrs), shape, ("ConvTranspose", shape, attrs)


def _pool_attrs(rng, dilations: bool):
    k = [int(v) for v in rng.integers(1, 5, 2)]
    attrs = {"kernel_shape": k, "strides": [int(v) for v in rng.integers(1, 4, 2)], "ceil_mode": int(rng.integers(0, 2))}
    if dilations and rng.random() < 0.5:
        attrs["dilations"] = [int(v) for v in rng.integers(1, 3, 2)]
    if rng.random() < 0.8:
        attrs["pads"] = [int(rng.integers(0, k[i % 2])) for i in range(4)]
    else:
        attrs["auto_pad"] = str(rng.choice(["SAME_UPPER", "SAME_LOWER", "VALID"]))
    return attrs


def _make_maxpool(rng):
    attrs = _pool_attrs(rng, dilations=True)
    n_out = 1
    if rng.random() < 0.5:  # the model's own Indices output, in either storage order
        n_out = 2
        attrs["storage_order"] = int(rng.integers(0, 2))
    shape = (1, int(rng.integers(1, 4)), *_spatial(rng))
    return _one_op_model("MaxPool", shape, n_out=n_out, **attrs), shape, ("MaxPool", shape, attrs)


def _make_avgpool(rng):
    attrs = _pool_attrs(rng, dilations=False)
    attrs["count_include_pad"] = int(rng.integers(0, 2))
    shape = (1, int(rng.integers(1, 4)), *_spatial(rng))
    return _one_op_model("AveragePool", shape, **attrs), shape, ("AveragePool", shape, attrs)


def _nearest_tie(n_in, n_out, ctm):
    """Whether some output samples exactly on a rounding boundary (an integer or a half) when the
    scale is n_out/n_in: onnxruntime's float32 arithmetic then decides the side, which nothing
    else can predict. (The scales drawn below are exact binary fractions, so they never tie
    inexactly.)"""
    scale = Fraction(n_out, n_in)
    for o in range(n_out):
        if ctm == "align_corners":
            src = Fraction(o * (n_in - 1), n_out - 1) if n_out > 1 else Fraction(0)
        elif ctm == "asymmetric":
            src = o / scale
        elif ctm == "tf_half_pixel_for_nn":
            src = (o + Fraction(1, 2)) / scale
        else:
            src = (o + Fraction(1, 2)) / scale - Fraction(1, 2)
        if (2 * src).denominator == 1:
            return True
    return False


def _make_resize(rng):
    mode = str(rng.choice(["nearest", "linear"]))
    ctm = str(rng.choice(["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel"]
                         + (["tf_half_pixel_for_nn"] if mode == "nearest" else [])))
    attrs = {"mode": mode, "coordinate_transformation_mode": ctm}
    if mode == "nearest":
        attrs["nearest_mode"] = str(rng.choice(["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]))
    shape = (1, int(rng.integers(1, 3)), *_spatial(rng, 3, 8))
    if rng.random() < 0.5:
        out = [int(v) for v in rng.integers(2, 15, 2)]
        if mode == "nearest" and any(_nearest_tie(n, o, ctm) for n, o in zip(shape[2:], out)):
            raise ValueError("a rounding tie")
        extra = [numpy_helper.from_array(np.array([1, shape[1], *out], np.int64), "sizes")]
        ins = ["", ""]
    else:
        scales = [float(v) for v in rng.choice([0.5, 1.0, 1.5, 2.0, 3.0], 2)]
        extra = [numpy_helper.from_array(np.array([1, 1, *scales], np.float32), "scales")]
        ins = [""]
    model = _one_op_model("Resize", shape, extra_inputs=[*ins, extra[0].name], **attrs)
    model.graph.initializer.extend(extra)
    return model, shape, ("Resize", shape, attrs, onnx.numpy_helper.to_array(extra[0]).tolist())


@pytest.mark.parametrize("make", [_make_conv, _make_conv_transpose, _make_maxpool, _make_avgpool, _make_resize],
                         ids=["Conv", "ConvTranspose", "MaxPool", "AveragePool", "Resize"])
def test_adjoint_on_random_geometries(make):
    _sweep(make, 30, seed=zlib.crc32(make.__name__.encode()))


@pytest.mark.parametrize("op,opset,scales", [
    ("Upsample", 9, (1.5, 2.5)), ("Upsample", 9, (2.0, 3.0)),  # Upsample only enlarges
    ("Resize", 10, (1.5, 2.5)), ("Resize", 10, (2.0, 3.0)), ("Resize", 10, (0.5, 0.75)),
])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_adjoint_of_legacy_resize(op, opset, scales, mode):
    """Upsample-9 and Resize-10 (inputs X, scales): asymmetric coordinates, onnxruntime's old
    nearest rule, non-integer scales."""
    shape = (1, 2, 5, 6)
    sc = numpy_helper.from_array(np.array([1, 1, *scales], np.float32), "scales")
    node = onnx.helper.make_node(op, ["x", "scales"], ["y"], mode=mode)
    graph = onnx.helper.make_graph([node], "legacy", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(shape))],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], [sc])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    model.ir_version = 7
    err = _adjoint_check(model, shape, np.random.default_rng(0))
    assert err is not None and err < 1e-5, err


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("ceil_mode", [0, 1])
def test_adjoint_of_dilated_average_pool_opset19(count_include_pad, ceil_mode):
    """AveragePool-19 takes dilations (the dynamo exporter writes opset 20)."""
    shape = (1, 2, 9, 8)
    model = _one_op_model("AveragePool", shape, kernel_shape=[3, 2], strides=[2, 1], dilations=[2, 3],
                          pads=[1, 1, 2, 1], count_include_pad=count_include_pad, ceil_mode=ceil_mode)
    model.opset_import[0].version = 19
    model.ir_version = 9
    err = _adjoint_check(model, shape, np.random.default_rng(3))
    assert err is not None and err < 1e-5, err
