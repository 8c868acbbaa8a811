"""Every pattern of the exporter corpus, from both torch exporters, against torch's own numbers.

tests/fixtures/exporters/ holds small torch modules (tests/fixtures/exporter_patterns.py)
exported by the TorchScript exporter (opset 17) and the dynamo exporter (its defaults: opset 20,
optimizer on, weights in a .onnx.data file), each with a reference made by torch
(make_exporter_fixtures.py, run by hand; torch is not needed here):

* MACs and params by forward hooks on the torch module (BatchNorm folded into the conv before it,
  as both exporters do): `cnn stats` totals must equal them, with no unknown row;
* the autograd gradient of ½·Σ a² over one channel of the last conv's block output, for the
  input stored beside it: the backprop projection must equal it, and finite differences of the
  forward model (onnxruntime, as in test_reverse_fd.py), for keep='max' (one unit) too;
* for nets whose activations are all ReLU-family, autograd with the ReLU-family backward replaced
  by the deconvnet and guided rules: those projections must equal them; on the plain chains the
  independent numpy reference (numpy_deconv.py) must agree too.

Test ids are <pattern>-<exporter>, so a failure names the pattern and the exporter.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

import numpy_deconv as ND
from cnncli.cli import cli
from test_reverse_fd import Objective, _agrees, _positions

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "exporters"
EXPORTERS = ("torchscript", "dynamo")
MODES = ("deconvnet", "backprop", "guided")
REFS = {p.stem: json.loads(p.read_text()) for p in sorted(FIXTURES.glob("*.json"))}
CHAINS = ("relu_chain", "clamp")  # plain chains: the numpy reference takes them


def _cases(only=None):
    return [pytest.param(name, exporter, id=f"{name}-{exporter}")
            for name, ref in REFS.items() if only is None or only(ref)
            for exporter in EXPORTERS]


def _path(name: str, exporter: str) -> Path:
    return FIXTURES / REFS[name]["files"][exporter]["onnx"]


def _array(name: str, kind: str) -> np.ndarray:
    return np.load(FIXTURES / REFS[name]["references"][kind])


def _close(got, want, rtol=1e-4):
    """rtol per value, with an absolute floor of rtol × the largest magnitude."""
    want = np.asarray(want, dtype=np.float64)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())


@pytest.fixture(scope="module")
def opened():
    """(runnable model, target) per fixture, as `cnn project` opens it; built once."""
    from cnncli.engine.model_input import open_for_images
    from cnncli.frontend.load import load_model
    from cnncli.engine.targets import by_layer

    cache = {}

    def get(name, exporter):
        if (name, exporter) not in cache:
            x_path = FIXTURES / REFS[name]["references"]["input"]
            m = open_for_images(load_model(str(_path(name, exporter))), array=(str(x_path), tuple(REFS[name]["input_shape"])))
            cache[name, exporter] = (m, by_layer(m.graph, REFS[name]["target"]["layer"]))
        return cache[name, exporter]

    return get


def _project(opened, name, exporter, mode, keep="map"):
    from cnncli.engine.project import Projector

    m, target = opened(name, exporter)
    channel = REFS[name]["target"]["channel"]
    projector = Projector(m.model, m.graph, m.input_name, target.tensor, mode, "cpu")
    (result,) = projector.project(_array(name, "input"), [channel], keep)
    assert result.channel == channel
    return result


# ---------------------------------------------------------------- the corpus itself


def test_corpus_is_complete():
    """Every pattern of issue 8 is here, from both exporters, with its files."""
    assert set(REFS) >= {"gather_input", "convnext_block", "shufflenet", "same_pad", "clamp", "mbconv_se",
                         "resnet_block", "relu_chain"}
    for name, ref in REFS.items():
        for exporter in EXPORTERS:
            assert _path(name, exporter).is_file()
        assert ref["files"]["torchscript"]["opset"] == 17
        assert ref["files"]["dynamo"]["opset"] >= 18
        for kind, file in ref["references"].items():
            assert (FIXTURES / file).is_file(), (name, kind)


@pytest.mark.parametrize("name,exporter", _cases())
def test_patterns_are_in_the_graphs(name, exporter):
    """The fixtures hold what they are for (so a change of exporter cannot quietly drop it)."""
    model = onnx.load(str(_path(name, exporter)), load_external_data=False)
    ops = {n.op_type for n in model.graph.node}
    assert sum(n.op_type == "Conv" for n in model.graph.node) == REFS[name]["convs"]
    expected = {
        "gather_input": {"Gather", "Concat", "MaxPool"},
        "convnext_block": {"LayerNormalization", "Transpose"} | ({"Erf"} if exporter == "torchscript" else {"Gelu"}),
        "shufflenet": {"Transpose", "Reshape"} | ({"Shape", "Slice"} if exporter == "torchscript" else {"Split"}),
        "same_pad": {"Sigmoid"} | ({"Pad", "Shape"} if exporter == "torchscript" else set()),  # dynamo folds the pads into Conv
        "clamp": {"Clip"} | ({"Cast"} if exporter == "torchscript" else set()),  # bounds Cast(Constant)
    }.get(name, set())
    assert expected <= ops, f"{name}-{exporter}: missing {expected - ops}"


def test_dynamo_fixtures_keep_weights_outside():
    """The dynamo form: weights in an external .onnx.data file (the TorchScript form: inline)."""
    for name, ref in REFS.items():
        data = ref["files"]["dynamo"]["external_data"]
        assert data and (FIXTURES / data).is_file(), name
        model = onnx.load(str(_path(name, "dynamo")), load_external_data=False)
        assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer), name


# ---------------------------------------------------------------- cnn stats


def _stats(path: Path) -> tuple[dict, str]:
    result = CliRunner().invoke(cli, ["stats", str(path), "--format", "json"])
    assert result.exit_code == 0, (result.stderr, result.exception)
    return json.loads(result.stdout), result.stderr


@pytest.mark.parametrize("name,exporter", _cases())
def test_stats_totals_equal_torch(name, exporter):
    doc, stderr = _stats(_path(name, exporter))
    totals, ref = doc["totals"], REFS[name]
    unknown_rows = [r["name"] for r in doc["layers"] if r["macs"] is None or r["flops_other"] is None]
    assert unknown_rows == [] and totals["unknown_ops"] == [] and totals["incomplete"] is False, (unknown_rows, totals)
    assert stderr.strip() == ""
    assert totals["convs"] == ref["convs"]
    assert (totals["macs"], totals["params"]) == (ref["macs"], ref["params"]), \
        f"cnncli MACs {totals['macs']:,} params {totals['params']:,}; torch {ref['macs']:,} / {ref['params']:,}"


def test_external_and_inline_data_cost_the_same(tmp_path):
    """A dynamo fixture with its weights saved inline gives the same rows and totals."""
    name = "resnet_block"
    model = onnx.load(str(_path(name, "dynamo")))  # external data read in
    inline = tmp_path / "inline.onnx"
    onnx.save(model, str(inline))
    assert not onnx.load(str(inline), load_external_data=False).graph.initializer[0].external_data
    a, _ = _stats(_path(name, "dynamo"))
    b, _ = _stats(inline)
    assert a["layers"] == b["layers"]
    assert a["totals"] == b["totals"]


# ---------------------------------------------------------------- cnn project


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name,exporter", _cases())
def test_project_runs(name, exporter, mode, tmp_path):
    """`cnn project --layer <last conv>` in every mode, on the stored input: one finite projection,
    of the channel torch chose, whose maximum is the torch module's (the same tensor)."""
    ref = REFS[name]
    t = ref["target"]
    x_path = FIXTURES / ref["references"]["input"]
    result = CliRunner().invoke(cli, ["project", str(_path(name, exporter)), str(x_path), "--layer", str(t["layer"]),
                                      "--channel", str(t["channel"]), "--mode", mode, "--out", str(tmp_path),
                                      "--save-npy", "--format", "json"])
    assert result.exit_code == 0, (result.stderr, result.exception)
    (row,) = json.loads(result.stdout)["results"]
    assert row["channel"] == t["channel"]
    assert row["max_activation"] == pytest.approx(t["max_activation"], rel=1e-4)
    assert row["location"] == t["location"]
    p = np.load(row["files"]["npy"])
    assert p.shape == tuple(ref["input_shape"]) and np.isfinite(p).all() and np.abs(p).max() > 0


@pytest.mark.parametrize("name,exporter", _cases())
def test_backprop_equals_autograd(name, exporter, opened):
    result = _project(opened, name, exporter, "backprop")
    _close(result.projection, _array(name, "backprop"))


@pytest.mark.parametrize("mode", ["deconvnet", "guided"])
@pytest.mark.parametrize("name,exporter", _cases(lambda ref: ref["relu_family_only"]))
def test_deconvnet_and_guided_equal_torch_reference(name, exporter, mode, opened):
    """Nets whose activations are all ReLU-family: torch autograd with max(R, 0) (deconvnet) and
    max(R, 0)·1[0 < x < hi] (guided) as the activations' backward."""
    result = _project(opened, name, exporter, mode)
    _close(result.projection, _array(name, mode))


def _objective(m, target, channel: int, unit=None) -> Objective:
    """½·Σ a² of one channel of ``target`` (or of its one unit at ``unit`` [y, x]) from plain
    onnxruntime runs of the model with the target as an extra output."""
    model = onnx.ModelProto()
    model.CopyFrom(m.model)
    model.graph.output.append(onnx.helper.make_tensor_value_info(target.tensor, onnx.TensorProto.FLOAT, None))

    class Case:
        pass

    case = Case()
    case.model, case.target = model, target.tensor

    class Unit(Objective):
        def act(self, x):
            return super().act(x)[tuple(unit)].reshape(1)

    return Objective(case, channel) if unit is None else Unit(case, channel)


def _directional(obj, x, grad, rng):
    v = rng.standard_normal(x.shape)
    v /= np.linalg.norm(v)
    gd = float(np.sum(grad * v[0]))
    ok, tried = _agrees(obj, x, v, gd, 1e-2 * abs(gd) + 1e-3 * np.linalg.norm(grad))
    assert ok, f"directional derivative {gd} vs finite differences {tried}"


@pytest.mark.parametrize("name,exporter", _cases())
def test_backprop_equals_finite_differences(name, exporter, opened):
    """The backprop projection is the gradient of ½·Σ a_c² of the forward model (onnxruntime)."""
    m, target = opened(name, exporter)
    x = _array(name, "input")
    grad = _project(opened, name, exporter, "backprop").projection.astype(np.float64)
    obj = _objective(m, target, REFS[name]["target"]["channel"])
    assert np.abs(obj.act(x)).max() > 0
    gmax = np.abs(grad).max()
    rng = np.random.default_rng(5)
    bad = []
    for q in _positions(grad, rng):
        d = np.zeros(x.shape)
        d.flat[q] = 1.0
        g = grad.reshape(-1)[q]
        ok, tried = _agrees(obj, x, d, g, 1e-2 * gmax + 1e-2 * abs(g))
        if not ok:
            bad.append((int(q), float(g), tried))
    assert not bad, f"projection vs finite differences (position, value, tried): {bad[:5]}"
    _directional(obj, x, grad, rng)


@pytest.mark.parametrize("name,exporter", _cases())
def test_keep_max_is_gradient_of_one_unit(name, exporter, opened):
    """keep='max' seeds the channel's strongest unit a* (where torch found it): the backprop
    projection is ∇ ½·a*², checked along a random direction."""
    m, target = opened(name, exporter)
    t = REFS[name]["target"]
    x = _array(name, "input")
    result = _project(opened, name, exporter, "backprop", keep="max")
    assert result.location == t["location"]
    obj = _objective(m, target, t["channel"], unit=t["location"])
    assert obj.act(x)[0] == pytest.approx(t["max_activation"], rel=1e-4)
    _directional(obj, x, result.projection.astype(np.float64), np.random.default_rng(6))


# ---------------------------------------------------------------- the numpy reference on the chains


def _const(model: onnx.ModelProto, name: str):
    """The value of a constant input: an initializer, a Constant node, or a Cast of one."""
    if not name:
        return None
    for t in model.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    for n in model.graph.node:
        if name in n.output:
            if n.op_type == "Constant":
                return numpy_helper.to_array(n.attribute[0].t)
            if n.op_type == "Cast":
                return _const(model, n.input[0])
    raise AssertionError(f"'{name}' is not a constant")


def _chain_layers(model: onnx.ModelProto, start: str, target: str) -> list[dict]:
    """numpy_deconv layers for the path start → target of a plain chain (each op reads the
    previous op's output); any other op fails the test."""
    layers, t = [], start
    while t != target:
        (n,) = [n for n in model.graph.node if n.input and n.input[0] == t]
        a = {att.name: onnx.helper.get_attribute_value(att) for att in n.attribute}
        if n.op_type == "Conv":
            W = _const(model, n.input[1])
            B = _const(model, n.input[2]) if len(n.input) > 2 else None
            assert a.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
            layers.append({"op": "conv", "W": W, "B": np.zeros(W.shape[0], np.float32) if B is None else B,
                           "strides": tuple(a.get("strides", (1, 1))), "pads": tuple(a.get("pads", (0, 0, 0, 0))),
                           "dilations": tuple(a.get("dilations", (1, 1))), "group": int(a.get("group", 1))})
        elif n.op_type == "Relu":
            layers.append({"op": "relu"})
        elif n.op_type == "Clip":
            lo = _const(model, n.input[1]) if len(n.input) > 1 else a.get("min")
            hi = _const(model, n.input[2]) if len(n.input) > 2 else a.get("max")
            layers.append({"op": "clip", "min": float(lo), "max": float(hi)})
        elif n.op_type in ("MaxPool", "AveragePool"):
            L = {"kernel": tuple(a["kernel_shape"]), "strides": tuple(a.get("strides", (1, 1))),
                 "pads": tuple(a.get("pads", (0, 0, 0, 0))), "ceil_mode": int(a.get("ceil_mode", 0))}
            if n.op_type == "AveragePool":
                layers.append({"op": "avgpool", **L, "count_include_pad": int(a.get("count_include_pad", 0))})
            else:
                layers.append({"op": "maxpool", **L})
        else:
            raise AssertionError(f"{n.op_type} is not in the numpy reference")
        t = n.output[0]
    return layers


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name,exporter", _cases(lambda ref: ref["pattern"] in CHAINS))
def test_chain_equals_numpy_reference(name, exporter, mode, opened):
    m, target = opened(name, exporter)
    layers = _chain_layers(m.model, m.input_name, target.tensor)
    x = _array(name, "input")
    records = ND.forward(layers, x)
    channel = REFS[name]["target"]["channel"]
    act = records[-1]["output"]
    assert act[0, channel].max() == pytest.approx(REFS[name]["target"]["max_activation"], rel=1e-4)
    want = ND.project(layers, records, ND.seeds(act, [channel], "map"), mode)[0]
    _close(_project(opened, name, exporter, mode).projection, want)
