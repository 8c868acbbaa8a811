"""`cnn stats` and `cnn connectivity` through the command line: formats, options, streams.

Stdout carries only data (parsed here in every format); warnings go to stderr.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from onnx import helper

import cnncli
from cnncli.cli import cli
from helpers import LIGHT_DIR, PNG_MAGIC, REPO, ZFNET_PAPER, init, loop_model, make_model, out, save, vi

ZF = str(ZFNET_PAPER)
CONV_NAMES = ["conv1", "conv2", "conv3", "conv4", "conv5"]
# conv MACs of the ZF net at batch 1 (Cout·Hout·Wout·Cin·k·k)
ZF_CONV_MACS = {
    "conv1": 96 * 110 * 110 * 3 * 7 * 7,  # 170,755,200
    "conv2": 256 * 26 * 26 * 96 * 5 * 5,  # 415,334,400
    "conv3": 384 * 13 * 13 * 256 * 3 * 3,  # 149,520,384
    "conv4": 384 * 13 * 13 * 384 * 3 * 3,  # 224,280,576
    "conv5": 256 * 13 * 13 * 384 * 3 * 3,  # 149,520,384
}
ZF_FC_MACS = {"fc6": 9216 * 4096, "fc7": 4096 * 4096, "fc8": 4096 * 1000}


def invoke(*args, input=None):
    return CliRunner().invoke(cli, list(args), input=input)


def ok(*args, input=None):
    result = invoke(*args, input=input)
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.stderr}"
    assert "Traceback" not in result.stderr
    return result


# ----------------------------------------------------------------------------- formats


def test_json_format():
    r = ok("stats", ZF, "--format", "json")
    data = json.loads(r.stdout)
    assert list(data) == ["model", "inputs", "layers", "totals"]
    assert data["model"] == ZF
    assert data["inputs"] == [{"name": "image", "shape": [1, 3, 224, 224], "dtype": "float32"}]
    for layer in data["layers"]:
        for key in ("macs", "flops_other", "params", "buffers"):
            assert type(layer[key]) is int, (layer["name"], key)
    t = data["totals"]
    for key in ("macs", "flops", "flops_other", "params", "buffers"):
        assert type(t[key]) is int, key
    assert t["macs"] == sum(ZF_CONV_MACS.values()) + sum(ZF_FC_MACS.values())
    assert t["flops"] == 2 * t["macs"] + t["flops_other"]
    assert t["flops_other"] == sum(layer["flops_other"] for layer in data["layers"])
    names = [layer["name"] for layer in data["layers"]]
    # graph order
    assert [n for n in names if n.startswith("conv") and "_" not in n] == CONV_NAMES
    assert names.index("conv1") < names.index("pool1") < names.index("conv2") < names.index("fc6") < names.index("prob")
    assert r.stderr.strip() == ""


def test_jsonl_format():
    r = ok("stats", ZF, "--format", "jsonl")
    lines = r.stdout.splitlines()
    rows = [json.loads(line) for line in lines]
    assert all(isinstance(x, dict) for x in rows)
    full = json.loads(ok("stats", ZF, "--format", "json").stdout)
    assert rows == full["layers"]  # one object per row, nothing else
    by_name = {x["name"]: x for x in rows}
    for name, macs in ZF_CONV_MACS.items():
        assert by_name[name]["macs"] == macs


def test_csv_format():
    r = ok("stats", ZF, "--format", "csv")
    reader = csv.DictReader(io.StringIO(r.stdout))
    assert reader.fieldnames[:3] == ["index", "name", "op"]
    for field in ("macs", "flops_other", "params", "buffers", "cpr", "act_bytes", "rf"):
        assert field in reader.fieldnames
    rows = list(reader)
    assert len(rows) == len(json.loads(ok("stats", ZF, "--format", "json").stdout)["layers"])
    by_name = {x["name"]: x for x in rows}
    for name, macs in ZF_CONV_MACS.items():
        assert int(by_name[name]["macs"]) == macs  # plain integers, no thousands separators
    assert int(by_name["conv1"]["params"]) == 96 * 3 * 7 * 7 + 96
    assert int(by_name["conv1"]["cpr"]) == 110 * 110
    assert by_name["conv1"]["index"] == "1"
    assert by_name["conv1"]["output_shape"] == "1x96x110x110"
    for x in rows:
        int(x["macs"]), int(x["params"]), int(x["flops_other"])  # every number parses


def test_markdown_format():
    r = ok("stats", ZF, "--format", "markdown")
    table = [line for line in r.stdout.splitlines() if line.startswith("|")]
    assert table[0].startswith("| #") and "MACs" in table[0] and "params" in table[0]
    assert set(table[1].replace("|", "").replace(":", "")) == {"-"}  # the separator row
    ncols = table[0].count(" | ") + 1
    assert table[1].count("|") == ncols + 1
    body = "\n".join(table)
    for name in CONV_NAMES:
        assert f"| {name} |" in body
    assert "170,755,200" in body  # conv1 MACs, human formatted


def test_table_format():
    r = ok("stats", ZF)
    for name in CONV_NAMES + ["fc6", "fc7", "fc8"]:
        assert name in r.stdout
    assert "170,755,200" in r.stdout
    assert "1,168,032,896" in r.stdout  # total MACs
    assert "62,357,608" in r.stdout  # total params


# ----------------------------------------------------------------------------- options


def test_by_op():
    data = json.loads(ok("stats", ZF, "--by", "op", "--format", "json").stdout)
    ops = {x["op"]: x for x in data["ops"]}
    assert ops["Conv"]["count"] == 5
    assert ops["Conv"]["macs"] == sum(ZF_CONV_MACS.values())  # 1,109,410,944
    assert ops["Gemm"]["count"] == 3
    assert ops["Gemm"]["macs"] == sum(ZF_FC_MACS.values())  # 58,621,952
    assert ops["Gemm"]["params"] == (9216 + 1) * 4096 + (4096 + 1) * 4096 + (4096 + 1) * 1000
    assert ops["Relu"]["count"] == 7
    assert ops["MaxPool"]["count"] == 3
    assert ops["LRN"]["count"] == 2
    assert [x["op"] for x in data["ops"]][:3] == ["Conv", "Relu", "MaxPool"]  # first appearance
    assert sum(x["params"] for x in data["ops"]) == 62_357_608
    assert data["totals"]["macs"] == 1_168_032_896


def test_sort_and_top():
    data = json.loads(ok("stats", ZF, "--sort", "macs", "--top", "3", "--format", "json").stdout)
    rows = data["layers"]
    assert len(rows) == 3
    # conv2 415,334,400 > conv4 224,280,576 > conv1 170,755,200
    assert [x["name"] for x in rows] == ["conv2", "conv4", "conv1"]
    assert [x["macs"] for x in rows] == sorted((x["macs"] for x in rows), reverse=True)
    # totals still cover the whole model
    assert data["totals"]["macs"] == 1_168_032_896


def test_sort_by_op_params():
    rows = json.loads(ok("stats", ZF, "--by", "op", "--sort", "params", "--format", "json").stdout)["ops"]
    assert rows[0]["op"] == "Gemm"
    assert [x["params"] for x in rows] == sorted((x["params"] for x in rows), reverse=True)


def test_plot_writes_png_and_keeps_stdout(tmp_path):
    png = tmp_path / "out.png"
    r = ok("stats", ZF, "--plot", str(png), "--format", "json")
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert png.stat().st_size > 1000
    assert json.loads(r.stdout)["totals"]["macs"] == 1_168_032_896
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]  # no temporary files left


def test_model_from_stdin():
    r = ok("stats", "-", "--format", "json", input=ZFNET_PAPER.read_bytes())
    data = json.loads(r.stdout)
    assert data["model"] == "<stdin>"
    assert data["totals"]["macs"] == 1_168_032_896
    assert data["totals"]["params"] == 62_357_608


def test_batch_option():
    data = json.loads(ok("stats", ZF, "--batch", "4", "--format", "json").stdout)
    assert data["inputs"][0]["shape"] == [4, 3, 224, 224]
    assert data["totals"]["macs"] == 4 * 1_168_032_896
    assert data["totals"]["params"] == 62_357_608
    conv1 = next(x for x in data["layers"] if x["name"] == "conv1")
    assert conv1["cpr"] == 4 * 110 * 110


def test_input_shape_option():
    # a 112x112 image: conv1 (112+2-7)//2+1 = 54
    data = json.loads(ok("stats", ZF, "--input-shape", "image=1x3x112x112", "--format", "json").stdout)
    conv1 = next(x for x in data["layers"] if x["name"] == "conv1")
    assert conv1["output_shape"] == [1, 96, 54, 54]
    assert conv1["macs"] == 96 * 54 * 54 * 3 * 7 * 7


def test_version():
    r = ok("--version")
    assert "cnn" in r.stdout
    assert cnncli.__version__ in r.stdout


# ----------------------------------------------------------------------------- warnings on stderr


def _mystery_model(path):
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
        helper.make_node("Mystery", ["c"], ["y"], name="mystery", domain="com.example"),
    ]
    model = make_model(nodes, [vi("x", [1, 3, 8, 8])], [out()], [init("W", [4, 3, 3, 3])],
                       extra_opsets=[("com.example", 1)])
    return save(model, path)


def test_unknown_op_warns_on_stderr_only(tmp_path):
    path = _mystery_model(tmp_path / "mystery.onnx")
    r = ok("stats", str(path), "--format", "json")
    data = json.loads(r.stdout)  # stdout is pure JSON
    mystery = next(x for x in data["layers"] if x["name"] == "mystery")
    assert mystery["macs"] is None and mystery["flops_other"] is None
    assert data["totals"]["incomplete"] is True
    assert data["totals"]["unknown_ops"] == ["com.example.Mystery"]
    assert data["totals"]["macs"] == 4 * 6 * 6 * 3 * 3 * 3
    warnings = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1, r.stderr  # one warning naming the op types
    assert "Mystery" in warnings[0]
    assert "Warning" not in r.stdout


def test_loop_warns_once(tmp_path):
    path = save(loop_model(), tmp_path / "loop.onnx")
    r = ok("stats", str(path), "--format", "json")
    data = json.loads(r.stdout)
    assert data["totals"]["incomplete"] is True
    assert data["totals"]["unknown_ops"] == ["Loop"]
    assert next(x for x in data["layers"] if x["name"] == "loop")["macs"] is None
    warnings = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and "Loop" in warnings[0], r.stderr


@pytest.mark.parametrize("fmt", ["table", "csv", "markdown", "jsonl"])
def test_unknown_op_other_formats(tmp_path, fmt):
    path = _mystery_model(tmp_path / "mystery.onnx")
    r = ok("stats", str(path), "--format", fmt)
    assert "Warning" not in r.stdout and "Mystery" in r.stderr
    assert "mystery" in r.stdout


def test_missing_external_data_warning_on_stderr(tmp_path):
    import onnx

    model = make_model([helper.make_node("Conv", ["x", "W"], ["y"], name="conv")],
                       [vi("x", [1, 3, 8, 8])], [out()], [init("W", [4, 3, 3, 3])])
    onnx.save(model, str(tmp_path / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="w.bin", size_threshold=0)
    (tmp_path / "w.bin").unlink()
    r = ok("stats", str(tmp_path / "m.onnx"), "--format", "json")
    assert json.loads(r.stdout)["totals"]["macs"] == 4 * 6 * 6 * 3 * 3 * 3
    assert "w.bin" in r.stderr


# ----------------------------------------------------------------------------- connectivity


def test_connectivity_calculator():
    r = ok("connectivity", "--input", "100x100", "--units", "100000", "--kernel", "3x3", "--format", "json")
    rows = json.loads(r.stdout)["layers"]
    assert len(rows) == 1
    row = rows[0]
    assert row["full"] == 100 * 100 * 100_000 == 1_000_000_000
    assert row["local"] == 100_000 * 3 * 3 == 900_000
    assert row["shared"] == 3 * 3 == 9
    assert row["local_over_shared"] == 100_000
    assert row["full_over_local"] == pytest.approx(1_000_000_000 / 900_000, rel=1e-3)


def test_connectivity_calculator_table():
    r = ok("connectivity", "--input", "100x100", "--units", "100000", "--kernel", "3x3")
    assert "1,000,000,000" in r.stdout and "900,000" in r.stdout


def test_connectivity_zfnet_rows():
    rows = json.loads(ok("connectivity", ZF, "--format", "json").stdout)["layers"]
    assert [x["name"] for x in rows] == CONV_NAMES
    assert [x["index"] for x in rows] == [1, 2, 3, 4, 5]
    # (name, Cin, Hin, Cout, Hout, k)
    geometry = [
        ("conv1", 3, 224, 96, 110, 7),
        ("conv2", 96, 55, 256, 26, 5),
        ("conv3", 256, 13, 384, 13, 3),
        ("conv4", 384, 13, 384, 13, 3),
        ("conv5", 384, 13, 256, 13, 3),
    ]
    for x, (name, cin, hin, cout, hout, k) in zip(rows, geometry):
        assert x["input_shape"] == [1, cin, hin, hin], name
        assert x["output_shape"] == [1, cout, hout, hout], name
        assert x["shared"] == cout * cin * k * k, name  # conv weights, bias excluded
        assert x["local"] == ZF_CONV_MACS[name], name  # MACs at batch 1
        assert x["full"] == (cin * hin * hin) * (cout * hout * hout), name
        assert x["local_over_shared"] == hout * hout, name  # = CPR
        assert x["full_over_local"] == pytest.approx((cin * hin * hin) / (cin * k * k), rel=1e-3), name
    assert rows[0]["full_over_local"] == 3 * 224 * 224 // (3 * 7 * 7)  # 1024 exactly


def test_connectivity_is_per_sample():
    rows1 = json.loads(ok("connectivity", ZF, "--format", "json").stdout)["layers"]
    rows4 = json.loads(ok("connectivity", ZF, "--batch", "4", "--format", "json").stdout)["layers"]
    assert [x["local"] for x in rows4] == [x["local"] for x in rows1]
    assert [x["shared"] for x in rows4] == [x["shared"] for x in rows1]


@pytest.mark.parametrize("fmt", ["csv", "markdown", "jsonl"])
def test_connectivity_formats(fmt):
    r = ok("connectivity", ZF, "--format", fmt)
    for name in CONV_NAMES:
        assert name in r.stdout
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(r.stdout)))
        assert int(rows[0]["shared"]) == 96 * 3 * 7 * 7
    if fmt == "jsonl":
        assert [json.loads(line)["name"] for line in r.stdout.splitlines()] == CONV_NAMES


def test_connectivity_needs_model_or_calculator():
    r = invoke("connectivity")
    assert r.exit_code == 2
    r = invoke("connectivity", ZF, "--units", "5")
    assert r.exit_code == 2


# ----------------------------------------------------------------------------- real processes


def test_subprocess_json_pipe():
    proc = subprocess.run(
        [sys.executable, "-m", "cnncli", "stats", "sample_models/zfnet_paper.onnx", "--format", "json"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    data = json.loads(proc.stdout)
    assert data["totals"]["macs"] == 1_168_032_896
    assert data["totals"]["params"] == 62_357_608
    assert b"Traceback" not in proc.stderr


@pytest.mark.parametrize("fmt", ["csv", "json", "table"])
def test_early_closed_pipe_no_traceback(fmt):
    """Like `cnn stats big.onnx --format csv | head -1`: the reader leaves after one line.

    densenet121 has hundreds of rows, more than a pipe buffer holds, so the writer does hit
    the closed pipe.
    """
    model = LIGHT_DIR / "light_densenet121.onnx"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnncli", "stats", str(model), "--format", fmt],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    first = proc.stdout.readline()
    proc.stdout.close()
    try:
        err = proc.stderr.read()
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert first  # it did start writing
    assert b"Traceback" not in err, err.decode()
    assert b"Exception ignored" not in err, err.decode()


# ----------------------------------------------------------------------------- more options


def test_sort_with_empty_values_puts_them_last():
    rows = json.loads(ok("stats", ZF, "--sort", "cpr", "--format", "json").stdout)["layers"]
    cprs = [x["cpr"] for x in rows]
    known = [c for c in cprs if c is not None]
    assert cprs[: len(known)] == known == sorted(known, reverse=True)
    assert known[0] == 110 * 110  # conv1
    assert all(c is None for c in cprs[len(known):])


def test_top_larger_than_rows():
    all_rows = json.loads(ok("stats", ZF, "--format", "json").stdout)["layers"]
    rows = json.loads(ok("stats", ZF, "--top", "1000", "--format", "json").stdout)["layers"]
    assert rows == all_rows


def test_two_input_shapes(tmp_path):
    nodes = [
        helper.make_node("Conv", ["a", "Wa"], ["ya"], name="conv_a"),
        helper.make_node("Conv", ["b", "Wb"], ["yb"], name="conv_b"),
    ]
    model = make_model(nodes, [vi("a", ["N", 3, "H", "W"]), vi("b", ["N", 1, "H", "W"])], [out("ya"), out("yb")],
                       [init("Wa", [4, 3, 3, 3]), init("Wb", [2, 1, 5, 5])])
    path = save(model, tmp_path / "two.onnx")
    data = json.loads(ok("stats", str(path), "--input-shape", "a=1x3x10x10", "--input-shape", "b=2x1x9x9",
                         "--format", "json").stdout)
    assert data["inputs"] == [
        {"name": "a", "shape": [1, 3, 10, 10], "dtype": "float32"},
        {"name": "b", "shape": [2, 1, 9, 9], "dtype": "float32"},
    ]
    by_name = {x["name"]: x for x in data["layers"]}
    assert by_name["conv_a"]["macs"] == 1 * 4 * 8 * 8 * 3 * 3 * 3
    assert by_name["conv_b"]["macs"] == 2 * 2 * 5 * 5 * 1 * 5 * 5
    assert by_name["conv_b"]["cpr"] == 2 * 5 * 5


def test_connectivity_depthwise(tmp_path):
    # x 1x8x10x10, W 8x1x3x3 group 8 stride 2 pad 1 -> 1x8x5x5
    nodes = [helper.make_node("Conv", ["x", "W"], ["y"], name="dw", group=8, strides=[2, 2], pads=[1, 1, 1, 1])]
    path = save(make_model(nodes, [vi("x", [1, 8, 10, 10])], [out()], [init("W", [8, 1, 3, 3])]), tmp_path / "dw.onnx")
    (row,) = json.loads(ok("connectivity", str(path), "--format", "json").stdout)["layers"]
    assert row["shared"] == 8 * 1 * 3 * 3
    assert row["local"] == 8 * 5 * 5 * 1 * 3 * 3  # = its MACs
    assert row["full"] == (8 * 10 * 10) * (8 * 5 * 5)
    assert row["local_over_shared"] == 5 * 5
    assert row["full_over_local"] == pytest.approx((8 * 10 * 10) / 9, rel=1e-3)


def test_connectivity_calculator_with_channels():
    # a 3x32x32 image into 10 units with 5x5 windows over all 3 channels
    r = ok("connectivity", "--input", "3x32x32", "--units", "10", "--kernel", "5x5", "--format", "json")
    (row,) = json.loads(r.stdout)["layers"]
    assert row["full"] == 3 * 32 * 32 * 10
    assert row["local"] == 10 * 5 * 5 * 3
    assert row["shared"] == 5 * 5 * 3
