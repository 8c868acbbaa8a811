"""Bad input: each case gives one `Error: ...` line on stderr, the right exit code, no traceback,
nothing on stdout, and no partial output file.

Exit codes: 2 bad usage (an option value out of range or naming nothing), 1 anything else the
user can fix.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import helper, numpy_helper

from cnncli.cli import cli
from helpers import LIGHT_DIR, PNG_MAGIC, REPO, ZFNET_PAPER, assert_one_line_error, conv_model, init, make_model, out, save, vi

ZF = str(ZFNET_PAPER)


def run_stats(model: str, *args, tmp_path=None, input=None):
    """`cnn stats MODEL ...`, with a --plot target in a fresh folder when ``tmp_path`` is given:
    the folder must still be empty afterwards (no partial or temporary output)."""
    extra = []
    plot_dir = None
    if tmp_path is not None:
        plot_dir = tmp_path / "plots"
        plot_dir.mkdir()
        extra = ["--plot", str(plot_dir / "out.png")]
    result = CliRunner().invoke(cli, ["stats", model, *args, *extra], input=input)
    if plot_dir is not None and result.exit_code != 0:
        assert list(plot_dir.iterdir()) == [], "a failed run left output behind"
    return result


# ----------------------------------------------------------------------------- unreadable files


def test_missing_file(tmp_path):
    msg = assert_one_line_error(run_stats(str(tmp_path / "nosuch.onnx"), tmp_path=tmp_path), 1)
    assert "nosuch.onnx" in msg


def test_directory(tmp_path):
    d = tmp_path / "adir"
    d.mkdir()
    msg = assert_one_line_error(run_stats(str(d), tmp_path=tmp_path), 1)
    assert "directory" in msg


def test_empty_file(tmp_path):
    p = tmp_path / "empty.onnx"
    p.write_bytes(b"")
    msg = assert_one_line_error(run_stats(str(p), tmp_path=tmp_path), 1)
    assert "empty" in msg


def test_empty_stdin():
    msg = assert_one_line_error(run_stats("-", input=b""), 1)
    assert "empty" in msg


def test_random_bytes(tmp_path):
    p = tmp_path / "random.onnx"
    p.write_bytes(np.random.default_rng(0).bytes(4096))
    assert_one_line_error(run_stats(str(p), tmp_path=tmp_path), 1)


def test_random_bytes_on_stdin():
    assert_one_line_error(run_stats("-", input=np.random.default_rng(1).bytes(1000)), 1)


def test_text_file(tmp_path):
    p = tmp_path / "model.onnx"
    p.write_text("this is not a model\n" * 20)
    assert_one_line_error(run_stats(str(p), tmp_path=tmp_path), 1)


# ----------------------------------------------------------------------------- truncated models


def test_every_truncation_is_a_model_error():
    """Cut zfnet_paper.onnx at every byte: each prefix is refused with a CnnError (exit 1),
    never analysed into wrong numbers and never a crash of another kind."""
    from cnncli.errors import CnnError
    from cnncli.frontend.graph import analyse
    from cnncli.frontend.load import parse_model
    from cnncli.costs.stats import compute_stats

    data = ZFNET_PAPER.read_bytes()
    accepted = []
    for cut in range(len(data)):
        try:
            compute_stats(analyse(parse_model(data[:cut], "cut.onnx")))
        except CnnError:
            continue
        accepted.append(cut)
    assert accepted == []


@pytest.mark.parametrize("fraction", [0.02, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99])
def test_truncated_model_cli(tmp_path, fraction):
    data = ZFNET_PAPER.read_bytes()
    p = tmp_path / "truncated.onnx"
    p.write_bytes(data[: int(len(data) * fraction)])
    assert_one_line_error(run_stats(str(p), "--format", "json", tmp_path=tmp_path), 1)


@pytest.mark.parametrize("cut_from_end", [1, 2, 5, 6, 7])
def test_truncated_tail_cli(tmp_path, cut_from_end):
    """The last bytes hold the opset import: a cut there must not pass for a complete model."""
    data = ZFNET_PAPER.read_bytes()
    p = tmp_path / "truncated.onnx"
    p.write_bytes(data[:-cut_from_end])
    assert_one_line_error(run_stats(str(p), tmp_path=tmp_path), 1)


def test_truncated_model_on_stdin():
    data = ZFNET_PAPER.read_bytes()
    assert_one_line_error(run_stats("-", "--format", "json", input=data[: len(data) // 3]), 1)


def test_truncated_model_real_process(tmp_path):
    p = tmp_path / "truncated.onnx"
    p.write_bytes(ZFNET_PAPER.read_bytes()[:1500])
    proc = subprocess.run([sys.executable, "-m", "cnncli", "stats", str(p), "--format", "json"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr


# ----------------------------------------------------------------------------- protobufs that are not models


def test_tensor_proto_is_not_a_model(tmp_path):
    p = tmp_path / "tensor.onnx"
    p.write_bytes(numpy_helper.from_array(np.arange(100, dtype=np.float32).reshape(10, 10), "t").SerializeToString())
    assert_one_line_error(run_stats(str(p), tmp_path=tmp_path), 1)


def test_graph_proto_is_not_a_model(tmp_path):
    p = tmp_path / "graph.onnx"
    p.write_bytes(onnx.load(ZF).graph.SerializeToString())
    assert_one_line_error(run_stats(str(p), tmp_path=tmp_path), 1)


def test_node_proto_is_not_a_model(tmp_path):
    p = tmp_path / "node.onnx"
    p.write_bytes(onnx.load(ZF).graph.node[0].SerializeToString())
    assert_one_line_error(run_stats(str(p), tmp_path=tmp_path), 1)


def test_model_without_graph(tmp_path):
    m = onnx.ModelProto(ir_version=8, producer_name="empty")
    p = tmp_path / "nograph.onnx"
    p.write_bytes(m.SerializeToString())
    assert_one_line_error(run_stats(str(p), tmp_path=tmp_path), 1)


def test_node_reading_undefined_tensor(tmp_path):
    """A damaged graph (a node reads a tensor nothing defines) is refused, not half-costed."""
    nodes = [helper.make_node("Conv", ["x", "W_gone"], ["y"], name="conv")]
    p = save(make_model(nodes, [vi("x", [1, 3, 8, 8])], [out()]), tmp_path / "damaged.onnx")
    msg = assert_one_line_error(run_stats(str(p), tmp_path=tmp_path), 1)
    assert "W_gone" in msg


# ----------------------------------------------------------------------------- external data


def _external_model(tmp_path):
    model = make_model(
        [helper.make_node("Conv", ["x", "W", "B"], ["y"], name="conv", pads=[1, 1, 1, 1])],
        [vi("x", [1, 3, 8, 8])], [out()], [init("W", [4, 3, 3, 3]), init("B", [4])],
    )
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="w.bin", size_threshold=0)
    assert (tmp_path / "w.bin").exists()
    return path


def test_external_data_present(tmp_path):
    path = _external_model(tmp_path)
    r = CliRunner().invoke(cli, ["stats", str(path), "--format", "json"])
    assert r.exit_code == 0, r.stderr
    assert r.stderr.strip() == ""
    assert json.loads(r.stdout)["totals"]["params"] == 4 * 3 * 3 * 3 + 4


def test_missing_external_data_file(tmp_path):
    """Designed behaviour: costs need shapes only, so a model whose external data file is gone
    is still analysed (exit 0, full numbers on stdout) with one warning on stderr that names the
    missing file. This is what lets a model with gigabytes of external weights be costed from
    its small .onnx graph alone."""
    path = _external_model(tmp_path)
    (tmp_path / "w.bin").unlink()
    r = CliRunner().invoke(cli, ["stats", str(path), "--format", "json"])
    assert r.exit_code == 0, r.stderr
    assert "Traceback" not in r.stderr
    data = json.loads(r.stdout)
    assert data["totals"]["macs"] == 1 * 4 * 8 * 8 * 3 * 3 * 3
    assert data["totals"]["params"] == 4 * 3 * 3 * 3 + 4
    warnings = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and "w.bin" in warnings[0], r.stderr
    assert not (tmp_path / "w.bin").exists()  # nothing recreated


def test_missing_external_data_connectivity(tmp_path):
    path = _external_model(tmp_path)
    (tmp_path / "w.bin").unlink()
    r = CliRunner().invoke(cli, ["connectivity", str(path), "--format", "json"])
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["layers"][0]["shared"] == 4 * 3 * 3 * 3
    assert "w.bin" in r.stderr


def _external_zfnet(tmp_path):
    """zfnet_paper with every initializer external, even the tiny int64 shape tensors that its
    ConstantOfShape weights are made from (size_threshold=0)."""
    path = tmp_path / "z.onnx"
    onnx.save(onnx.load(ZF), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="z.bin", size_threshold=0)
    return path


def test_external_small_shape_tensors_are_read(tmp_path):
    """With the data file present, small external shape tensors are read so shapes resolve:
    the numbers are those of the inline model."""
    path = _external_zfnet(tmp_path)
    r = CliRunner().invoke(cli, ["stats", str(path), "--format", "json"])
    assert r.exit_code == 0, r.stderr
    t = json.loads(r.stdout)["totals"]
    assert t["macs"] == 1_168_032_896
    assert t["params"] == 62_357_608
    assert t["incomplete"] is False
    assert r.stderr.strip() == ""


def test_external_shape_tensors_missing(tmp_path):
    """With the data file gone even the shape tensors are unknown: still exit 0 with the
    warning, and the totals say they are incomplete rather than pass for real numbers."""
    path = _external_zfnet(tmp_path)
    (tmp_path / "z.bin").unlink()
    r = CliRunner().invoke(cli, ["stats", str(path), "--format", "json"])
    assert r.exit_code == 0, r.stderr
    assert "Traceback" not in r.stderr and "z.bin" in r.stderr
    assert json.loads(r.stdout)["totals"]["incomplete"] is True


# ----------------------------------------------------------------------------- shapes


def test_unknown_symbolic_dim(tmp_path):
    p = save(conv_model(["N", 3, "H", "W"], [4, 3, 3, 3], x_name="pixels"), tmp_path / "sym.onnx")
    msg = assert_one_line_error(run_stats(str(p), tmp_path=tmp_path), 1)
    assert "pixels" in msg  # the input
    assert "'H'" in msg or "dim 2" in msg  # the dim


def test_unknown_symbolic_dim_connectivity(tmp_path):
    p = save(conv_model(["N", 3, "H", "W"], [4, 3, 3, 3], x_name="pixels"), tmp_path / "sym.onnx")
    msg = assert_one_line_error(CliRunner().invoke(cli, ["connectivity", str(p)]), 1)
    assert "pixels" in msg


def test_unknown_symbolic_dim_fixed_by_input_shape(tmp_path):
    p = save(conv_model(["N", 3, "H", "W"], [4, 3, 3, 3], x_name="pixels"), tmp_path / "sym.onnx")
    r = CliRunner().invoke(cli, ["stats", str(p), "--input-shape", "pixels=1x3x10x10", "--format", "json"])
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["totals"]["macs"] == 4 * 8 * 8 * 3 * 3 * 3


def test_input_without_shape(tmp_path):
    p = save(conv_model(None, [4, 3, 3, 3], x_name="pixels"), tmp_path / "noshape.onnx")
    msg = assert_one_line_error(run_stats(str(p), tmp_path=tmp_path), 1)
    assert "pixels" in msg


# ----------------------------------------------------------------------------- bad usage (exit 2)


@pytest.mark.parametrize("value", ["0", "-3"])
def test_batch_out_of_range(tmp_path, value):
    msg = assert_one_line_error(run_stats(ZF, "--batch", value, tmp_path=tmp_path), 2)
    assert "--batch" in msg


def test_batch_not_a_number():
    assert_one_line_error(run_stats(ZF, "--batch", "many"), 2)


def test_input_shape_names_no_input(tmp_path):
    msg = assert_one_line_error(run_stats(ZF, "--input-shape", "nosuch=1x3x8x8", tmp_path=tmp_path), 2)
    assert "nosuch" in msg and "image" in msg  # names the bad name and the real inputs


@pytest.mark.parametrize("value", ["1x3x8x8", "image=", "image=1xfoox8", "image=1x3x0x8", "=1x3x8x8", "image=1x-3x8x8"])
def test_malformed_input_shape(tmp_path, value):
    msg = assert_one_line_error(run_stats(ZF, "--input-shape", value, tmp_path=tmp_path), 2)
    assert "--input-shape" in msg


def test_sort_names_no_column(tmp_path):
    msg = assert_one_line_error(run_stats(ZF, "--sort", "nosuchcolumn", tmp_path=tmp_path), 2)
    assert "nosuchcolumn" in msg


def test_sort_by_op_names_layer_column():
    # with --by op the rows have no 'rf' column
    assert_one_line_error(run_stats(ZF, "--by", "op", "--sort", "rf"), 2)


def test_top_zero():
    assert_one_line_error(run_stats(ZF, "--top", "0"), 2)


def test_unknown_format():
    assert_one_line_error(run_stats(ZF, "--format", "yaml"), 2)


def test_connectivity_calculator_bad_values():
    r = CliRunner().invoke(cli, ["connectivity", "--input", "100xfoo", "--units", "10", "--kernel", "3x3"])
    assert_one_line_error(r, 2)
    r = CliRunner().invoke(cli, ["connectivity", "--input", "100x100", "--units", "0", "--kernel", "3x3"])
    assert_one_line_error(r, 2)
    r = CliRunner().invoke(cli, ["connectivity", "--input", "1x2x3x4", "--units", "10", "--kernel", "3x3"])
    assert_one_line_error(r, 2)


def test_connectivity_missing_file(tmp_path):
    assert_one_line_error(CliRunner().invoke(cli, ["connectivity", str(tmp_path / "nosuch.onnx")]), 1)


# ----------------------------------------------------------------------------- unwritable --plot


def test_plot_path_under_a_regular_file(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    target = blocker / "out.png"
    msg = assert_one_line_error(CliRunner().invoke(cli, ["stats", ZF, "--plot", str(target)]), 1)
    assert "afile" in msg
    assert blocker.read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_plot_path_in_missing_folder(tmp_path):
    """The spec does not say whether a missing folder is created; either way there is no
    traceback, and a failure leaves nothing behind."""
    target = tmp_path / "no" / "such" / "folder" / "out.png"
    r = CliRunner().invoke(cli, ["stats", ZF, "--plot", str(target)])
    if r.exit_code == 0:
        assert target.read_bytes()[:8] == PNG_MAGIC
    else:
        assert_one_line_error(r, 1)
        assert not target.exists()
        assert not list(tmp_path.rglob("*.png")) and not list(tmp_path.rglob("*.tmp*"))


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write to read-only folders")
def test_plot_path_in_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert_one_line_error(CliRunner().invoke(cli, ["stats", ZF, "--plot", str(ro / "out.png")]), 1)
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_plot_path_is_a_directory(tmp_path):
    d = tmp_path / "out.png"
    d.mkdir()
    r = CliRunner().invoke(cli, ["stats", ZF, "--plot", str(d)])
    assert_one_line_error(r, 2)  # click's Path(dir_okay=False) refuses it as bad usage
    assert d.is_dir() and list(d.iterdir()) == []


def test_plot_path_not_png(tmp_path):
    target = tmp_path / "out.jpg"
    msg = assert_one_line_error(CliRunner().invoke(cli, ["stats", ZF, "--plot", str(target)]), 2)
    assert "--plot" in msg
    assert not target.exists()


# ----------------------------------------------------------------------------- non-models recognised from their first bytes


def _big_sparse(path, head: bytes, size: int):
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)  # sparse: takes neither the disk nor the time to write
    return path


def test_big_random_file_refused_from_its_first_bytes(tmp_path):
    """A large non-model is refused after reading its first bytes, not read whole: the peak of
    Python allocations stays far below the file's size (old behaviour: the whole file)."""
    import tracemalloc

    from cnncli.errors import ModelError
    from cnncli.frontend.load import load_model

    size = 256 * 2**20
    p = _big_sparse(tmp_path / "big.onnx", np.random.default_rng(3).bytes(1 << 16), size)
    tracemalloc.start()
    try:
        with pytest.raises(ModelError, match="not an ONNX model"):
            load_model(str(p))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, peak
    assert_one_line_error(run_stats(str(p)), 1)


def test_big_file_of_zeros_refused(tmp_path):
    p = _big_sparse(tmp_path / "zeros.onnx", b"", 64 * 2**20)
    assert "not an ONNX model" in assert_one_line_error(run_stats(str(p)), 1)


def test_field_running_past_the_end_refused(tmp_path):
    # ir_version 8, then a graph (field 7) said to be 2^32-1 bytes long, in a 100-byte file
    head = b"\x08\x08" + b"\x3a\xff\xff\xff\xff\x0f"
    p = tmp_path / "short.onnx"
    p.write_bytes(head + bytes(100 - len(head)))
    msg = assert_one_line_error(run_stats(str(p)), 1)
    assert "truncated" in msg


def test_sniff_accepts_every_real_model():
    """The first-bytes check accepts real models of every exporter the onnx package ships."""
    import io

    from cnncli.frontend.sniff import check_model_bytes

    paths = [ZFNET_PAPER, *sorted(LIGHT_DIR.glob("light_*.onnx"))]
    for path in paths:
        data = path.read_bytes()
        check_model_bytes(io.BytesIO(data), data[:4096], len(data), str(path))  # file, walked to the end
        check_model_bytes(io.BytesIO(data), data[:4096], None, str(path))  # pipe, first chunk only


# ----------------------------------------------------------------------------- --input-shape and --batch that do not fit


def _fixed_batch_model(tmp_path):
    return save(conv_model([1, 3, 8, 8], [4, 3, 3, 3], x_name="pixels"), tmp_path / "fixed.onnx")


def test_input_shape_wrong_rank(tmp_path):
    p = _fixed_batch_model(tmp_path)
    msg = assert_one_line_error(run_stats(str(p), "--input-shape", "pixels=3x8x8", tmp_path=tmp_path), 2)
    assert "--input-shape" in msg and "'pixels'" in msg and "4 dims" in msg


def test_input_shape_wrong_channels(tmp_path):
    p = _fixed_batch_model(tmp_path)
    msg = assert_one_line_error(run_stats(str(p), "--input-shape", "pixels=1x5x8x8", tmp_path=tmp_path), 2)
    assert "'pixels'" in msg and "3 input channels" in msg and "5" in msg


def test_input_shape_wrong_channels_through_other_ops(tmp_path):
    # pixels -> Relu -> Conv(W 4x3x3x3): 6 channels do not fit, named by the input that feeds it
    nodes = [helper.make_node("Relu", ["pixels"], ["r"]), helper.make_node("Conv", ["r", "W"], ["y"], name="conv")]
    p = save(make_model(nodes, [vi("pixels", ["N", 3, 8, 8])], [out()], [init("W", [4, 3, 3, 3])]), tmp_path / "m.onnx")
    msg = assert_one_line_error(run_stats(str(p), "--input-shape", "pixels=1x6x8x8"), 2)
    assert "'pixels'" in msg and "conv" in msg


def test_input_shape_that_fits_is_costed(tmp_path):
    p = _fixed_batch_model(tmp_path)
    r = CliRunner().invoke(cli, ["stats", str(p), "--input-shape", "pixels=2x3x10x10", "--format", "json"])
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["totals"]["macs"] == 2 * 4 * 8 * 8 * 27


def test_batch_on_fixed_batch_model_warns(tmp_path):
    p = _fixed_batch_model(tmp_path)
    r = CliRunner().invoke(cli, ["stats", str(p), "--batch", "8", "--format", "json"])
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["totals"]["macs"] == 1 * 4 * 6 * 6 * 27  # batch 1, as the model says
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--batch 8" in lines[0] and "ignored" in lines[0] and "pixels" in lines[0]
    assert "--input-shape pixels=8x3x8x8" in lines[0]


def test_batch_on_symbolic_batch_model_is_quiet(tmp_path):
    p = save(conv_model(["N", 3, 8, 8], [4, 3, 3, 3], x_name="pixels"), tmp_path / "sym.onnx")
    r = CliRunner().invoke(cli, ["stats", str(p), "--batch", "8", "--format", "json"])
    assert r.exit_code == 0 and r.stderr.strip() == ""
    assert json.loads(r.stdout)["totals"]["macs"] == 8 * 4 * 6 * 6 * 27
