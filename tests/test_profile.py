"""`cnn profile` (issue 18): kernel times joined to the original nodes, fused ones named; the
stats columns equal `cnn stats`; every format keeps the data rows clean of the header; the
options are checked; --compare-providers skips a provider onnxruntime lacks.

Tiny models built with onnx.helper and few runs; the timing checks (the sum of per-layer
medians against the whole run) are in benchmarks/bench_profile.py, not here (no timed test).
"""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import helper, numpy_helper

import cnncli
from cnncli.cli import cli
from helpers import PNG_MAGIC, REPO, assert_one_line_error, make_model, out, vi

MINI = REPO / "sample_models" / "zfnet_mini.onnx"
FAST = {"runs": 2, "warmup": 0}


@pytest.fixture(autouse=True)
def _cache_home(tmp_path_factory, monkeypatch):
    """The peaks are cached in a folder of the test session's own, never the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))


def _w(name, shape, seed):
    return numpy_helper.from_array(np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * 0.1, name)


def conv_bn_relu_add() -> onnx.ModelProto:
    """conv1 → bn1 → relu1 (Conv+BN+ReLU), then conv2 → add2 (+ relu1's output) → relu2
    (Conv+Add+ReLU), 16 channels, 32×32."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "s", "bb", "m", "v"], ["n1"], name="bn1"),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r1"], ["a2"], name="add2"),
        helper.make_node("Relu", ["a2"], ["y"], name="relu2"),
    ]
    inits = [_w("w1", [16, 16, 3, 3], 1), _w("b1", [16], 2), _w("w2", [16, 16, 3, 3], 3), _w("b2", [16], 4),
             _w("s", [16], 5), _w("bb", [16], 6), _w("m", [16], 7),
             numpy_helper.from_array(np.ones(16, np.float32), "v")]
    return make_model(nodes, [vi("x", [1, 16, 32, 32])], [out()], inits)


def by_name(result):
    return {r.name: r for r in result.layers}


def test_conv_bn_relu_fused_into_conv_at_extended():
    p = cnncli.profile(conv_bn_relu_add(), opt_level="extended", **FAST)
    rows = by_name(p)
    assert rows["conv1"].ms is not None and rows["conv1"].kernels == "FusedConv"
    for name in ("bn1", "relu1"):
        assert rows[name].fused_into == "conv1" and rows[name].ms is None
    # every kernel's time is on a node of the model, and the layers' time adds up to what was joined
    assert p.totals["ms_unjoined"] == 0 and not [w for w in p.warnings if "joined" in w]
    assert set(rows) == {n.name for n in conv_bn_relu_add().graph.node}
    assert sum(r.ms for r in p.layers if r.ms) == pytest.approx(p.totals["ms_layers"], abs=1e-3)


def test_nothing_fused_at_disable():
    p = cnncli.profile(conv_bn_relu_add(), opt_level="disable", **FAST)
    assert all(r.fused_into is None and r.ms is not None for r in p.layers)
    assert [r.kernels for r in p.layers] == [r.op for r in p.layers]


def test_conv_add_relu_fused_at_all():
    """At level all on x86, onnxruntime's NCHWc transformer fuses Conv+Add+ReLU into one conv
    (the Add as its Sum input) between ReorderInput and ReorderOutput kernels."""
    p = cnncli.profile(conv_bn_relu_add(), opt_level="all", **FAST)
    rows = by_name(p)
    assert p.totals["ms_unjoined"] == 0
    assert rows["bn1"].fused_into == "conv1" and rows["relu1"].fused_into == "conv1"
    if "nchwc" not in (rows["conv2"].kernels or ""):
        pytest.skip("onnxruntime has no NCHWc kernels on this CPU: nothing fuses the Add")
    assert rows["add2"].fused_into == "conv2" and rows["relu2"].fused_into == "conv2"
    # the layout kernels' time is on the convs next to them, never lost
    assert "ReorderInput" in rows["conv1"].kernels and "ReorderOutput" in rows["conv2"].kernels
    assert [n for n, r in rows.items() if r.ms is not None] == ["conv1", "conv2"]


def test_unnamed_nodes_join_too():
    """Nodes without names (or sharing one) are named for the session and still joined."""
    m = conv_bn_relu_add()
    for n in m.graph.node:
        n.name = "" if n.op_type != "Conv" else "same"
    p = cnncli.profile(m, opt_level="extended", **FAST)
    assert p.totals["ms_unjoined"] == 0
    fused = [r for r in p.layers if r.fused_into]
    assert [r.op for r in fused] == ["BatchNormalization", "Relu"] and {r.fused_into for r in fused} == {"same"}


def test_stats_columns_equal_cnn_stats():
    p = cnncli.profile(MINI, **FAST)
    s = cnncli.stats(MINI)
    rows = by_name(p)
    for layer in s.layers:
        got = rows[layer.name]
        assert (got.macs, got.params, got.flops_other, got.act_bytes, got.rf) == \
            (layer.macs, layer.params, layer.flops_other, layer.act_bytes, layer.rf)
    assert p.totals["macs"] == s.totals["macs"] and p.totals["params"] == s.totals["params"]
    assert p.totals["runs"] == 2 and p.totals["ms_run_min"] <= p.totals["ms_run"] <= p.totals["ms_run_max"]
    assert 0 < p.totals["ms_kernels"] <= p.totals["ms_run"]  # a run's kernels run within it
    timed = [r for r in p.layers if r.ms]
    assert sum(r.ms_share for r in timed) == pytest.approx(1.0, abs=1e-3)
    for r in timed:
        assert r.bound in ("compute", "memory")
        if r.macs:
            assert r.gmacs_per_s == pytest.approx(r.macs / (r.ms * 1e6), rel=1e-2)


def test_batch_and_by_op():
    p = cnncli.profile(MINI, batch=2, by="op", **FAST)
    s = cnncli.stats(MINI, batch=2, by="op")
    macs = {r.op: r.macs for r in p.rows}
    assert {r.op: r.macs for r in s.rows}.items() <= macs.items()
    assert sum(r.ms or 0 for r in p.rows) == pytest.approx(p.totals["ms_layers"], abs=1e-2)


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_formats_keep_header_out_of_the_rows(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(conv_bn_relu_add(), path)
    res = invoke("profile", path, "--runs", 1, "--warmup", 0, "--format", "json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert set(doc) == {"model", "inputs", "peaks", "layers", "totals"}
    assert doc["peaks"]["cpu"]["gmacs_per_s"] > 0 and doc["totals"]["peak_gbytes_per_s"] > 0
    res = invoke("profile", path, "--runs", 1, "--warmup", 0, "--format", "csv")
    table = list(csv.reader(io.StringIO(res.stdout)))
    assert table[0][:3] == ["index", "name", "op"] and "ms" in table[0] and "fused_into" in table[0]
    assert len(table) == 1 + 6 and all(len(r) == len(table[0]) for r in table)
    res = invoke("profile", path, "--runs", 1, "--warmup", 0, "--format", "jsonl")
    assert [json.loads(line)["name"] for line in res.stdout.splitlines()] == ["conv1", "bn1", "relu1", "conv2", "add2", "relu2"]
    res = invoke("profile", path, "--runs", 1, "--warmup", 0, "--format", "markdown")
    assert "peaks" in res.stdout.splitlines()[0] and "| ms_run |" in res.stdout


def test_plot_and_input_file(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(conv_bn_relu_add(), path)
    data = tmp_path / "x.npy"
    np.save(data, np.ones((1, 16, 32, 32), np.float32))
    res = invoke("profile", path, "--runs", 1, "--warmup", 0, "--input", data, "--plot", tmp_path / "roof.png")
    assert res.exit_code == 0, res.stderr
    assert (tmp_path / "roof.png").read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_compare_providers_without_cuda_warns_and_goes_on(tmp_path):
    import onnxruntime as ort

    path = tmp_path / "m.onnx"
    onnx.save(conv_bn_relu_add(), path)
    res = invoke("profile", path, "--runs", 1, "--warmup", 0, "--compare-providers", "cpu,cuda", "--format", "json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert set(doc["peaks"]) == {"cpu", "cuda"} and len(doc["layers"]) == 12
    else:
        assert "provider 'cuda' is not available" in res.stderr
        assert set(doc["peaks"]) == {"cpu"} and {r["provider"] for r in doc["layers"]} == {"cpu"}
        assert set(doc["totals"]["providers"]) == {"cpu"}


@pytest.mark.parametrize("args, flag", [
    (["--runs", "0"], "--runs"),
    (["--warmup", "-1"], "--warmup"),
    (["--compare-providers", "cpu,tpu"], "--compare-providers"),
    (["--input", "x.png"], "--input"),
    (["--plot", "x.svg"], "--plot"),
    (["--sort", "nope"], "--sort"),
    (["--opt-level", "max"], "--opt-level"),
])
def test_bad_options_are_usage_errors(args, flag):
    res = invoke("profile", MINI, *args)
    line = assert_one_line_error(res, 2)
    assert flag in line


def test_python_options_checked():
    for kwargs, flag in (({"runs": "3"}, "--runs"), ({"compare_providers": ["cpu", 3]}, "--compare-providers"),
                         ({"opt_level": "none"}, "--opt-level"), ({"warmup": 1.5}, "--warmup")):
        with pytest.raises(cnncli.BadArgument) as info:
            cnncli.profile(MINI, **kwargs)
        assert info.value.param == flag


def test_loop_body_kernels_are_inside_the_loop():
    """The kernels of a Loop's body run inside the Loop's own kernel: not unjoined, not counted twice."""
    from helpers import loop_model

    with pytest.warns(cnncli.CnnWarning, match="incomplete"):
        p = cnncli.profile(loop_model(), **FAST)
    assert [r.op for r in p.layers] == ["Loop"] and p.layers[0].ms is not None and p.layers[0].bound is None
    assert p.totals["ms_unjoined"] == 0 and p.totals["ms_kernels"] == pytest.approx(p.totals["ms_layers"], abs=1e-3)


def test_input_array_must_fit_the_declared_input(tmp_path):
    data = tmp_path / "x.npy"
    np.save(data, np.zeros((1, 3, 5, 5), np.float32))
    line = assert_one_line_error(invoke("profile", MINI, "--input", data), 2)
    assert "--input" in line and "1x3x5x5" in line and "Nx3x112x112" in line
    np.savez(tmp_path / "x.npz", picture=np.zeros((1, 3, 112, 112), np.float32))
    line = assert_one_line_error(invoke("profile", MINI, "--input", tmp_path / "x.npz"), 2)
    assert "no input 'picture'" in line
    np.savez(tmp_path / "y.npz", image=np.zeros((2, 3, 112, 112), np.float32))
    p = cnncli.profile(MINI, input=tmp_path / "y.npz", runs=1, warmup=0)  # its batch of 2 sets the shape
    assert p.inputs[0]["shape"] == [2, 3, 112, 112] and p.layers[0].macs == 2 * cnncli.stats(MINI).layers[0].macs


@pytest.mark.parametrize("fixture", ["exporters/resnet_block.dynamo.onnx", "exporters/convnext_block.torchscript.onnx",
                                     "exporters/mbconv_se.torchscript.onnx", "exporters_more/zfnet_mini.qdq.onnx"])
@pytest.mark.parametrize("level", ["all", "extended"])
def test_exported_models_join_whole(fixture, level):
    """Real exports (residual blocks, a LayerNorm onnxruntime fuses from 8 nodes, squeeze-excite,
    a QDQ-quantized net): every kernel joined, and every fused node names a row that has time."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = cnncli.profile(REPO / "tests" / "fixtures" / fixture, opt_level=level, runs=1, warmup=0)
    rows = by_name(p)
    assert p.totals["ms_unjoined"] == 0
    assert all(rows[r.fused_into].ms is not None for r in p.layers if r.fused_into)
    assert any(r.fused_into for r in p.layers)
