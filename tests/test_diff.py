"""`cnn diff` (issue 18): the bundled ZF paper net against itself at batch 4 (every layer's MACs
×4, params the same) and at 160 pixels (each side equal to `cnn stats` at its shape); two exports
of one torchvision net by both torch exporters (tests/fixtures/diff, made by
make_diff_exports.py) match layer for layer; the matching rules; --measure; every format."""

from __future__ import annotations

import csv
import io
import json
from types import SimpleNamespace as Row

import pytest
from click.testing import CliRunner

import cnncli
from cnncli.cli import cli
from cnncli.engine.diff import match
from helpers import REPO, ZFNET_PAPER, assert_one_line_error

EXPORTS = REPO / "tests" / "fixtures" / "diff"


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_batch_4_multiplies_every_layer_macs():
    d = cnncli.diff(ZFNET_PAPER, b_batch=4)
    s = cnncli.stats(ZFNET_PAPER)
    assert [r.name for r in d.rows] == [r.name for r in s.layers]
    for r in d.rows:
        assert r.status in ("same", "changed") and r.macs_b == 4 * r.macs_a and r.params_b == r.params_a
        assert r.params_change == 0 and r.act_bytes_b == 4 * r.act_bytes_a
    assert d.totals["macs_ratio"] == 4 and d.totals["params_change"] == 0
    assert (d.totals["added"], d.totals["removed"]) == (0, 0)


def test_two_shapes_each_side_equals_stats():
    with pytest.warns(cnncli.CnnWarning, match="incomplete"):  # fc6's weights take 6x6 maps, not 160 pixels' 4x4
        d = cnncli.diff(ZFNET_PAPER, ZFNET_PAPER, input_shapes={"image": "1x3x224x224"},
                        b_input_shapes={"image": "1x3x160x160"})
    big = cnncli.stats(ZFNET_PAPER, input_shapes={"image": (1, 3, 224, 224)})
    with pytest.warns(cnncli.CnnWarning, match="incomplete"):
        small = cnncli.stats(ZFNET_PAPER, input_shapes={"image": (1, 3, 160, 160)})
    assert [(r.macs_a, r.params_a, r.act_bytes_a) for r in d.rows] == [(r.macs, r.params, r.act_bytes) for r in big.layers]
    assert [(r.macs_b, r.params_b, r.act_bytes_b) for r in d.rows] == [(r.macs, r.params, r.act_bytes) for r in small.layers]
    assert d.totals["macs_a"] == big.totals["macs"] and d.totals["macs_b"] == small.totals["macs"]
    assert d.b["inputs"][0]["shape"] == [1, 3, 160, 160]


def test_both_torch_exporters_match_every_layer():
    a, b = EXPORTS / "mobilenet_v2_025.torchscript.onnx", EXPORTS / "mobilenet_v2_025.dynamo.onnx"
    d = cnncli.diff(a, b)
    assert (d.totals["added"], d.totals["removed"]) == (0, 0)
    assert len(d.rows) == len(cnncli.stats(a).layers) == len(cnncli.stats(b).layers)
    assert all(r.macs_a == r.macs_b for r in d.rows)  # the same net: the same arithmetic, layer by layer
    convs = [r for r in d.rows if r.op == "Conv"]
    assert len(convs) == 52 and all(r.name_b for r in convs)  # names differ: matched by position among Convs
    # the dynamo exporter writes the global pooling as a ReduceMean: matched by place and shape
    assert [(r.op, r.op_b) for r in d.rows if r.op_b] == [("GlobalAveragePool", "ReduceMean")]


def test_matching_rules():
    def rows(*spec):
        return [Row(name=n, op=o, output_shape=s) for n, o, s in spec]

    a = rows(("c1", "Conv", [1]), ("r1", "Relu", [1]), ("c2", "Conv", [2]), ("pool", "GlobalAveragePool", [3]),
             ("fc", "Gemm", [4]))
    b = rows(("x", "Conv", [1]), ("r1", "Relu", [1]), ("extra", "Sigmoid", [1]), ("y", "Conv", [2]),
             ("mean", "ReduceMean", [3]), ("fc", "Gemm", [4]), ("tail", "Softmax", [4]))
    assert match(a, b) == [(0, 0), (1, 1), (None, 2), (2, 3), (3, 4), (4, 5), (None, 6)]
    # a name shared by two layers of one side is no match by name: by position then
    a = rows(("n", "Conv", [1]), ("n", "Conv", [2]))
    b = rows(("n", "Conv", [1]), ("m", "Relu", [1]))
    assert match(a, b) == [(0, 0), (None, 1), (1, None)]


def test_measure_and_formats(tmp_path):
    mini = REPO / "sample_models" / "zfnet_mini.onnx"
    res = invoke("diff", mini, "--b-batch", "2", "--measure", "--runs", 1, "--warmup", 0, "--format", "json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert set(doc) == {"a", "b", "layers", "totals"}
    conv = doc["layers"][0]
    assert conv["ms_a"] > 0 and conv["ms_b"] > 0 and conv["ms_ratio"] == pytest.approx(conv["ms_b"] / conv["ms_a"], rel=1e-2)
    assert doc["totals"]["ms_run_a"] > 0 and doc["totals"]["ms_run_b"] > 0
    res = invoke("diff", ZFNET_PAPER, "--b-input-shape", "image=1x3x160x160", "--format", "csv")
    table = list(csv.reader(io.StringIO(res.stdout)))
    assert table[0][:4] == ["name", "name_b", "op", "op_b"] and all(len(r) == len(table[0]) for r in table)
    assert len(table) == 1 + len(cnncli.stats(ZFNET_PAPER).layers)
    res = invoke("diff", ZFNET_PAPER, "--b-batch", "4", "--format", "markdown")
    assert res.stdout.startswith("**A: ") and "| macs_ratio | 4 |" in res.stdout


def test_bad_usage():
    assert "--b-batch" in assert_one_line_error(invoke("diff", ZFNET_PAPER, "--b-batch", "0"), 2)
    assert "--b-input-shape" in assert_one_line_error(invoke("diff", ZFNET_PAPER, "--b-input-shape", "image=1x3"), 2)
    line = assert_one_line_error(invoke("diff", ZFNET_PAPER, REPO / "no_such.onnx"), 1)
    assert "no_such.onnx" in line


@pytest.mark.parametrize("name, options", [("diff", "DiffOptions"), ("profile", "ProfileOptions")])
def test_click_parameters_are_the_options_fields_with_their_defaults(name, options):
    import dataclasses

    import click

    options = getattr(cnncli, options)
    params = {p.name: p for p in cli.get_command(None, name).params}
    for f in dataclasses.fields(options):
        p = params[f.name]
        if isinstance(p, click.Option) and not p.multiple and f.default is not None:
            assert p.default == options.default(f.name), (name, f.name)
        assert f.metadata["flag"] in p.opts + p.secondary_opts


def test_cli_and_python_give_the_same_document():
    res = invoke("diff", ZFNET_PAPER, "--b-input-shape", "image=2x3x224x224", "--format", "json")
    assert res.exit_code == 0 and res.stderr == ""
    assert json.loads(res.stdout) == cnncli.diff(ZFNET_PAPER, b_input_shapes={"image": (2, 3, 224, 224)}).to_dict()


def test_gelu_written_as_five_ops_against_one():
    """TorchScript writes GELU as Div, Erf, Add, Mul, Mul; the dynamo exporter as one Gelu: the
    Gelu pairs with the last Mul (what the next layer reads), the other four are removed, and
    everything else matches."""
    fixtures = REPO / "tests" / "fixtures" / "exporters"
    d = cnncli.diff(fixtures / "convnext_block.torchscript.onnx", fixtures / "convnext_block.dynamo.onnx")
    removed = [r.op for r in d.rows if r.status == "removed"]
    assert removed == ["Div", "Erf", "Add", "Mul"] * 2 and d.totals["added"] == 0
    assert [(r.op, r.op_b) for r in d.rows if r.op_b] == [("Mul", "Gelu"), ("Mul", "Gelu"),
                                                         ("GlobalAveragePool", "ReduceMean")]


def test_a_fixed_batch_warning_names_the_b_option_that_set_it():
    import onnx

    model = onnx.load(REPO / "sample_models" / "zfnet_mini.onnx")
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1  # a fixed batch of 1
    with pytest.warns(cnncli.CnnWarning) as caught:
        cnncli.diff(model, b_batch=2)
    texts = [str(w.message) for w in caught]
    assert any(t.startswith("B: --b-batch 2 is ignored") and "--b-input-shape image=2x" in t for t in texts), texts
    assert not any("--batch 2" in t for t in texts)
