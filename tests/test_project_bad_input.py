"""`cnn project` on bad input: each case gives one `Error: ...` line on stderr, nothing on stdout,
no traceback, the right exit code, and leaves no file behind (the --out folder is never created,
an --export-reverse file never written).

Exit codes: 2 bad usage (a layer, channel, tensor, input or size that does not exist or is out of
range; both or neither of --layer/--tensor), 1 anything else the user can fix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from cnncli.cli import cli
from helpers import ZFNET_PAPER, assert_one_line_error

ZF = str(ZFNET_PAPER)


# ----------------------------------------------------------------------------- models and files


def _f32(name: str, arr) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name)


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "t", inputs, [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs], inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="cnncli-tests")
    model.ir_version = 8
    return model


def _x(name: str = "x", hw=(32, 32)):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 3, *hw])


def tiny_model(hw=(32, 32)) -> onnx.ModelProto:
    """x [1,3,32,32] → conv1 (8) → relu1 → pool1 → conv2 (6) → relu2: two Conv layers."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "W2", "B2"], ["c2"], name="conv2", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
    ]
    inits = [_f32("W1", rng.normal(size=(8, 3, 3, 3))), _f32("B1", np.zeros(8)),
             _f32("W2", rng.normal(size=(6, 8, 3, 3))), _f32("B2", np.zeros(6))]
    return _model(nodes, [_x(hw=hw)], ["r2"], inits)


def unsupported_model(op: str) -> onnx.ModelProto:
    """conv1 → ``op`` (node 'the_op') → conv2: the op lies between the input and layer 2."""
    rng = np.random.default_rng(1)
    middle = [helper.make_node(op, ["c1"], ["e"], name="the_op")]
    if op == "FastGelu":  # onnxruntime's com.microsoft op: it runs, and no op outside the standard domain has a rule
        middle = [helper.make_node(op, ["c1"], ["e"], name="the_op", domain="com.microsoft")]
    nodes = [
        helper.make_node("Conv", ["x", "W1"], ["c1"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        *middle,
        helper.make_node("Conv", ["e", "W2"], ["c2"], name="conv2", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    ]
    model = _model(nodes, [_x()], ["c2"], [_f32("W1", rng.normal(size=(4, 3, 3, 3))), _f32("W2", rng.normal(size=(5, 4, 3, 3)))])
    if op == "FastGelu":
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model


def joined_inputs_model() -> onnx.ModelProto:
    """Inputs a and b, each through a conv, then added: the sum depends on both."""
    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("Conv", ["a", "W"], ["ca"], name="conva", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["b", "W"], ["cb"], name="convb", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["ca", "cb"], ["s"], name="add"),
    ]
    return _model(nodes, [_x("a"), _x("b")], ["s"], [_f32("W", rng.normal(size=(4, 3, 3, 3)))])


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("bad")
    paths = {}

    def save_model(name, model):
        paths[name] = str(d / f"{name}.onnx")
        onnx.save(model, paths[name])

    save_model("tiny", tiny_model())
    save_model("sym", tiny_model(hw=("H", "W")))
    save_model("joined", joined_inputs_model())
    for op in ("Hardmax", "FastGelu"):
        save_model(op, unsupported_model(op))

    rng = np.random.default_rng(3)
    img = Image.fromarray((rng.random((40, 48, 3)) * 255).astype(np.uint8))
    img.save(d / "ok.png")
    paths["png"] = str(d / "ok.png")
    for fmt, ext in (("PNG", "png"), ("JPEG", "jpg")):
        full = d / f"full.{ext}"
        img.save(full, format=fmt)
        data = full.read_bytes()
        (d / f"half.{ext}").write_bytes(data[: len(data) // 2])
        paths[f"half_{ext}"] = str(d / f"half.{ext}")
    (d / "noise.jpg").write_bytes(rng.bytes(2000))
    paths["noise_jpg"] = str(d / "noise.jpg")
    np.save(d / "good.npy", rng.normal(size=(1, 3, 32, 32)).astype(np.float32))
    paths["npy"] = str(d / "good.npy")
    np.save(d / "shape.npy", np.zeros((1, 3, 31, 32), np.float32))
    paths["npy_shape"] = str(d / "shape.npy")
    np.save(d / "batch.npy", np.zeros((2, 3, 32, 32), np.float32))
    paths["npy_batch"] = str(d / "batch.npy")
    np.save(d / "f64.npy", np.zeros((1, 3, 32, 32), np.float64))
    paths["npy_f64"] = str(d / "f64.npy")
    (d / "garbage.npy").write_bytes(b"this is not an array")
    paths["npy_garbage"] = str(d / "garbage.npy")
    (d / "a_file").write_text("not a folder")
    paths["a_file"] = str(d / "a_file")
    return paths


# ----------------------------------------------------------------------------- helpers


def run_bad(tmp_path: Path, *args, export: bool = False):
    """`cnn project ...` with --out in a folder that does not exist yet (and, with ``export``,
    an --export-reverse file): a failed run must create neither."""
    out = tmp_path / "out"
    extra = ["--out", str(out)]
    rev = tmp_path / "reverse.onnx"
    if export:
        extra += ["--export-reverse", str(rev)]
    result = CliRunner().invoke(cli, ["project", *map(str, args), *extra])
    if result.exit_code != 0:
        assert not out.exists(), f"a failed run left {sorted(p.name for p in out.rglob('*'))}"
        assert not rev.exists()
        assert list(tmp_path.glob(".*tmp*")) == []
    return result


# ----------------------------------------------------------------------------- unreadable input


def test_random_bytes_named_jpg(tmp_path, files):
    msg = assert_one_line_error(run_bad(tmp_path, files["tiny"], files["noise_jpg"], "--layer", 1, export=True), 1)
    assert "noise.jpg" in msg


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_truncated_image(tmp_path, files, ext):
    msg = assert_one_line_error(run_bad(tmp_path, files["tiny"], files[f"half_{ext}"], "--layer", 1, export=True), 1)
    assert f"half.{ext}" in msg and "truncated" in msg


def test_missing_image(tmp_path, files):
    msg = assert_one_line_error(run_bad(tmp_path, files["tiny"], tmp_path / "nosuch.png", "--layer", 1), 1)
    assert "nosuch.png" in msg


def test_missing_npy(tmp_path, files):
    msg = assert_one_line_error(run_bad(tmp_path, files["tiny"], tmp_path / "nosuch.npy", "--layer", 1), 1)
    assert "nosuch.npy" in msg


def test_missing_model(tmp_path, files):
    msg = assert_one_line_error(run_bad(tmp_path, tmp_path / "nosuch.onnx", files["png"], "--layer", 1), 1)
    assert "nosuch.onnx" in msg


@pytest.mark.parametrize("key, words", [
    ("npy_shape", ["1x3x31x32", "1x3x32x32"]),
    ("npy_batch", ["2x3x32x32", "batch 1"]),
    ("npy_f64", ["float64", "float32"]),
    ("npy_garbage", ["garbage.npy", "not a .npy"]),
])
def test_bad_npy(tmp_path, files, key, words):
    msg = assert_one_line_error(run_bad(tmp_path, files["tiny"], files[key], "--layer", 1, export=True), 1)
    for w in words:
        assert w in msg


# ----------------------------------------------------------------------------- targets and channels (usage: exit 2)


@pytest.mark.parametrize("layer", ["0", "6", "-1"])
def test_layer_out_of_range_zfnet(tmp_path, layer):
    msg = assert_one_line_error(run_bad(tmp_path, ZF, tmp_path / "unused.png", "--layer", layer), 2)
    assert "--layer" in msg and layer in msg and "5 Conv layers" in msg


def test_layer_out_of_range_tiny(tmp_path, files):
    # a good image, layer 3 of a 2-conv model
    msg = assert_one_line_error(run_bad(tmp_path, files["tiny"], files["png"], "--layer", 3), 2)
    assert "2 Conv layers" in msg


@pytest.mark.parametrize("channel", ["8", "-1", "0,99"])
def test_channel_out_of_range(tmp_path, files, channel):
    msg = assert_one_line_error(run_bad(tmp_path, files["tiny"], files["png"], "--layer", 1, "--channel", channel), 2)
    assert "--channel" in msg and "8 channels" in msg


@pytest.mark.parametrize("channel", ["a,b", "1.5", ",", ""])
def test_bad_channel_list(tmp_path, files, channel):
    msg = assert_one_line_error(run_bad(tmp_path, files["tiny"], files["png"], "--layer", 1, "--channel", channel), 2)
    assert "--channel" in msg


def test_top_out_of_range(tmp_path, files):
    """--top 0 is bad usage; past the channel count takes them all with a warning (issue 19,
    test_pictures_explained.py::test_top_past_the_channel_count_takes_them_all)."""
    msg = assert_one_line_error(run_bad(tmp_path, files["tiny"], files["png"], "--layer", 1, "--top", "0"), 2)
    assert "--top" in msg


def test_top_and_channel_together(tmp_path, files):
    msg = assert_one_line_error(run_bad(tmp_path, files["tiny"], files["png"], "--layer", 1, "--top", 2, "--channel", 1), 2)
    assert "--top" in msg or "--channel" in msg


def test_tensor_that_does_not_exist(tmp_path, files):
    msg = assert_one_line_error(run_bad(tmp_path, files["tiny"], files["png"], "--tensor", "nosuch"), 2)
    assert "'nosuch'" in msg


def test_tensor_of_the_wrong_rank(tmp_path, files):
    msg = assert_one_line_error(run_bad(tmp_path, files["tiny"], files["png"], "--tensor", "B1", "--channel", 0), 2)
    assert "'B1'" in msg


@pytest.mark.parametrize("args", [[], ["--layer", "1", "--tensor", "r1"]], ids=["neither", "both"])
def test_layer_and_tensor_exactly_one(tmp_path, files, args):
    msg = assert_one_line_error(run_bad(tmp_path, files["tiny"], files["png"], *args), 2)
    assert "--layer" in msg and "--tensor" in msg


def test_target_the_input_does_not_reach(tmp_path, files):
    """A weight is a 4-D tensor of the graph, but no signal from the input passes through it."""
    msg = assert_one_line_error(run_bad(tmp_path, files["tiny"], files["png"], "--tensor", "W2", "--channel", 0, export=True), 1)
    assert "'W2'" in msg and "does not depend on" in msg and "input 'x'" in msg


@pytest.mark.parametrize("op", ["Hardmax", "FastGelu"])
def test_unsupported_op_on_the_path(tmp_path, files, op):
    msg = assert_one_line_error(run_bad(tmp_path, files[op], files["npy"], "--layer", 2, "--channel", 0, export=True), 1)
    assert f"op {op}" in msg and "'the_op'" in msg


def test_unsupported_op_off_the_path_is_fine(tmp_path, files):
    """Layer 1 lies before the Hardmax: projecting it works."""
    result = run_bad(tmp_path, files["Hardmax"], files["npy"], "--layer", 1, "--channel", 0)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""


# ----------------------------------------------------------------------------- inputs and sizes


def test_several_inputs_need_input_name(tmp_path, files):
    msg = assert_one_line_error(run_bad(tmp_path, files["joined"], files["npy"], "--layer", 1, "--channel", 0), 2)
    assert "--input-name" in msg and "a, b" in msg


def test_input_name_that_does_not_exist(tmp_path, files):
    msg = assert_one_line_error(
        run_bad(tmp_path, files["joined"], files["npy"], "--input-name", "c", "--layer", 1, "--channel", 0), 2)
    assert "'c'" in msg


def test_target_that_needs_the_other_input_too(tmp_path, files):
    """The sum depends on a and b: projecting it from a alone cannot run (no value for b)."""
    msg = assert_one_line_error(
        run_bad(tmp_path, files["joined"], files["npy"], "--input-name", "a", "--tensor", "s", "--channel", 0), 1)
    assert "'b'" in msg


def test_symbolic_size_needs_size(tmp_path, files):
    msg = assert_one_line_error(run_bad(tmp_path, files["sym"], files["png"], "--layer", 1, "--channel", 0), 2)
    assert "--size" in msg


@pytest.mark.parametrize("size", ["20", "axb", "20x30x40"])
def test_bad_size(tmp_path, files, size):
    msg = assert_one_line_error(run_bad(tmp_path, files["sym"], files["png"], "--layer", 1, "--size", size), 2)
    assert "--size" in msg


def test_size_against_a_fixed_input(tmp_path, files):
    msg = assert_one_line_error(run_bad(tmp_path, files["tiny"], files["png"], "--layer", 1, "--size", "64x64"), 2)
    assert "--size" in msg and "32x32" in msg


@pytest.mark.parametrize("args, param", [
    (["--mean", "0.1,0.2"], "--mean"),  # 2 values for 3 channels
    (["--mean", "red"], "--mean"),
    (["--std", "0"], "--std"),
    (["--preset", "nosuch"], "--preset"),
])
def test_bad_preprocessing(tmp_path, files, args, param):
    msg = assert_one_line_error(run_bad(tmp_path, files["tiny"], files["png"], "--layer", 1, "--channel", 0, *args), 2)
    assert param in msg


# ----------------------------------------------------------------------------- environment (exit 1)


def test_cuda_unavailable(tmp_path, files):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime offers CUDA")
    msg = assert_one_line_error(run_bad(tmp_path, files["tiny"], files["png"], "--layer", 1, "--provider", "cuda"), 1)
    assert "cuda" in msg and "CPUExecutionProvider" in msg


def test_out_folder_under_a_regular_file(tmp_path, files):
    out = Path(files["a_file"]) / "out"
    result = CliRunner().invoke(cli, ["project", files["tiny"], files["png"], "--layer", 1, "--out", str(out)])
    msg = assert_one_line_error(result, 1)
    assert "a_file" in msg
    assert Path(files["a_file"]).read_text() == "not a folder"


def test_out_is_a_regular_file(tmp_path, files):
    result = CliRunner().invoke(cli, ["project", files["tiny"], files["png"], "--layer", 1, "--out", files["a_file"]])
    msg = assert_one_line_error(result, 1)  # an unwritable output like any other (issue 9), not a usage error
    assert "a_file" in msg and "not a folder" in msg


def test_export_reverse_under_a_regular_file(tmp_path, files):
    rev = Path(files["a_file"]) / "reverse.onnx"
    result = run_bad(tmp_path, files["tiny"], files["png"], "--layer", 1, "--channel", 0, "--export-reverse", rev)
    msg = assert_one_line_error(result, 1)
    assert "a_file" in msg


def test_failure_leaves_an_existing_out_folder_as_it_was(tmp_path, files):
    out = tmp_path / "existing"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = CliRunner().invoke(cli, ["project", files["Hardmax"], files["npy"], "--layer", 2, "--channel", 0, "--out", str(out)])
    assert_one_line_error(result, 1)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
