"""Hostile and damaged model files (issue 15): external data anywhere in a model is checked
before anything reads it and never read relative to the current folder; graphs that write a
tensor twice, tensors whose data disagrees with their dims, empty or overflowing dims and
zero strides are one-line errors; a sparse Conv weight is costed; the Python API given a
ModelProto or bytes checks what the CLI checks."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import cnncli
from cnncli.cli import cli
from cnncli.errors import CnnError, ModelError
from helpers import assert_one_line_error, init, make_model, out, vi

SECRET = "cwd_secret.bin"
X = [1, 3, 8, 8]


def _external(t: TensorProto, location: str = SECRET) -> TensorProto:
    """``t`` with its data moved out to ``location`` (as written: the writer checks nothing)."""
    size = len(numpy_helper.to_array(t).tobytes())
    for field in ("raw_data", "float_data", "int64_data"):
        t.ClearField(field)
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(size))):
        t.external_data.add(key=key, value=value)
    return t


def _ones(name: str, shape=X, dtype=np.float32) -> TensorProto:
    return numpy_helper.from_array(np.ones(shape, dtype), name)


def _model(nodes, inits=(), sparse=(), functions=(), opsets=()) -> onnx.ModelProto:
    """``nodes`` turn input x [1, 3, 8, 8] into z; a Conv (layer 1) reads z."""
    graph = helper.make_graph([*nodes, helper.make_node("Conv", ["z", "W"], ["y"], name="conv")], "g",
                              [vi("x", X)], [out()], [init("W", [4, 3, 3, 3], value=np.ones(108)), *inits],
                              sparse_initializer=list(sparse))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), *opsets], functions=list(functions))
    model.ir_version = 8
    return model


def _branch(nodes, result: str, inits=()) -> onnx.GraphProto:
    return helper.make_graph(nodes, "branch", [], [vi(result, X)], list(inits))


def _hostile(kind: str, location: str = SECRET) -> onnx.ModelProto:
    """A model with one tensor of ``kind`` (anywhere but a top-level initializer or Constant
    value, which the first round covered) stored as external data at ``location``."""
    add = helper.make_node("Add", ["x", "c"], ["z"])
    cond = numpy_helper.from_array(np.array(True), "cond")
    plain = _branch([helper.make_node("Identity", ["x"], ["e"])], "e")
    if kind == "ConstantOfShape value":
        value = _external(numpy_helper.from_array(np.array([2.0], np.float32), "v"), location)
        return _model([helper.make_node("ConstantOfShape", ["s"], ["c"], value=value), add],
                      [init("s", [4], np.int64, X)])
    if kind == "Constant sparse_value":
        sv = helper.make_sparse_tensor(_external(_ones("sv", [4]), location),
                                       numpy_helper.from_array(np.arange(4, dtype=np.int64), "i"), X)
        return _model([helper.make_node("Constant", [], ["c"], sparse_value=sv), add])
    if kind in ("sparse_initializer values", "sparse_initializer indices"):
        values, indices = _ones("c", [4]), numpy_helper.from_array(np.arange(4, dtype=np.int64), "c_i")
        _external(values if kind.endswith("values") else indices, location)
        return _model([add], sparse=[helper.make_sparse_tensor(values, indices, X)])
    if kind == "If branch Constant":
        then = _branch([helper.make_node("Constant", [], ["t"], value=_external(_ones("t"), location))], "t")
        return _model([helper.make_node("If", ["cond"], ["z"], then_branch=then, else_branch=plain)], [cond])
    if kind == "If branch initializer":
        then = _branch([helper.make_node("Identity", ["b"], ["t"])], "t", [_external(_ones("b"), location)])
        return _model([helper.make_node("If", ["cond"], ["z"], then_branch=then, else_branch=plain)], [cond])
    if kind == "Loop body initializer":
        body = helper.make_graph(
            [helper.make_node("Identity", ["cin"], ["cout"]), helper.make_node("Add", ["acc", "lb"], ["acc2"])], "body",
            [vi("i", [], TensorProto.INT64), vi("cin", [], TensorProto.BOOL), vi("acc", X)],
            [vi("cout", [], TensorProto.BOOL), vi("acc2", X)], [_external(_ones("lb"), location)])
        return _model([helper.make_node("Loop", ["n", "cond", "x"], ["z"], body=body)],
                      [numpy_helper.from_array(np.array(1, np.int64), "n"), cond])
    if kind == "function Constant":
        fn = helper.make_function("local", "AddK", ["a"], ["b"], [
            helper.make_node("Constant", [], ["k"], value=_external(_ones("k"), location)),
            helper.make_node("Add", ["a", "k"], ["b"])], [helper.make_opsetid("", 17)])
        return _model([helper.make_node("AddK", ["x"], ["z"], domain="local")], functions=[fn],
                      opsets=[helper.make_opsetid("local", 1)])
    if kind == "custom op TENSORS attribute":
        node = helper.make_node("Identity", ["x"], ["z"])
        node.attribute.append(helper.make_attribute("extra", [_external(_ones("e"), location)]))
        return _model([node])
    raise AssertionError(kind)


KINDS = ["ConstantOfShape value", "Constant sparse_value", "sparse_initializer values", "sparse_initializer indices",
         "If branch Constant", "If branch initializer", "Loop body initializer", "function Constant",
         "custom op TENSORS attribute"]


@pytest.fixture
def attack(tmp_path, monkeypatch):
    """(model folder trav/sub, the user's current folder holding cwd_secret.bin and an image)."""
    folder, cwd = tmp_path / "trav" / "sub", tmp_path / "cwd"
    folder.mkdir(parents=True)
    cwd.mkdir()
    (cwd / SECRET).write_bytes(np.full(1024, 7, np.float32).tobytes())
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(cwd / "img.png")
    monkeypatch.chdir(cwd)
    return folder, cwd


def _write(folder, model) -> str:
    path = folder / "m.onnx"
    path.write_bytes(model.SerializeToString())
    return os.path.relpath(path)


def _cnn(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.mark.parametrize("kind", KINDS)
def test_external_tensor_anywhere_is_never_read_from_the_current_folder(attack, kind):
    """The model's folder has no cwd_secret.bin; the current folder has one. Running the model
    is refused naming the missing file (onnxruntime, handed the model's bytes, would read it
    relative to the current folder)."""
    folder, _ = attack
    path = _write(folder, _hostile(kind))
    msg = assert_one_line_error(_cnn("project", path, "img.png", "--layer", 1, "--channel", 0, "--out", "o"), 1)
    assert SECRET in msg and "missing" in msg
    assert not os.path.exists("o")
    stats = _cnn("stats", path, "--format", "json")
    assert stats.exit_code == 0 and f"'{SECRET}' is missing" in stats.stderr


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("location", ["../../cwd/" + SECRET, "/etc/passwd"])
def test_external_location_outside_refused_anywhere(attack, kind, location):
    folder, _ = attack
    path = _write(folder, _hostile(kind, location))
    for command in (("stats", path), ("project", path, "img.png", "--layer", 1, "--channel", 0, "--out", "o")):
        msg = assert_one_line_error(_cnn(*command), 1)
        assert "outside the model's folder" in msg and location in msg


RUNS = {  # every command that runs a model, as a new user would call it on m.onnx and img.png
    "cam": ("img.png", "--layer", 1, "--out", "o"), "dream": ("--layer", 1, "--channel", 0, "--steps", 1, "--out", "o"),
    "profile": ("--runs", 1, "--plot", "o.png"), "diff": ("--measure", "--runs", 1), "report": ("img.png", "--out", "o"),
    "project --smooth": ("img.png", "--tensor", "y", "--channel", 0, "--mode", "backprop", "--smooth", 2, "--out", "o"),
}


@pytest.mark.parametrize("command", sorted(RUNS))
@pytest.mark.parametrize("kind", ["ConstantOfShape value", "sparse_initializer values", "If branch Constant"])
@pytest.mark.parametrize("location", [SECRET, "../../cwd/" + SECRET])
def test_new_commands_read_no_external_tensor_from_the_current_folder_or_outside(attack, command, kind, location):
    """cam, dream, profile, diff --measure, report and project's attributions refuse as project does."""
    folder, _ = attack
    path = _write(folder, _hostile(kind, location))
    msg = assert_one_line_error(_cnn(command.split()[0], path, *RUNS[command]), 1)
    assert location in msg and ("missing" in msg if location == SECRET else "outside the model's folder" in msg)
    assert not os.path.exists("o") and not os.path.exists("o.png")


@pytest.mark.parametrize("kind", ["If branch Constant", "Loop body initializer", "sparse_initializer values"])
def test_symlink_in_a_subgraph_or_sparse_tensor_refused(attack, kind):
    folder, cwd = attack
    (folder / "w.bin").symlink_to(cwd / SECRET)
    path = _write(folder, _hostile(kind, "w.bin"))
    assert "symbolic link" in assert_one_line_error(_cnn("stats", path), 1)


def test_a_location_key_given_twice_is_checked_twice(attack):
    folder, _ = attack
    model = _hostile("ConstantOfShape value", "w.bin")
    model.graph.node[0].attribute[0].t.external_data.add(key="location", value="../../cwd/" + SECRET)
    (folder / "w.bin").write_bytes(np.float32(2).tobytes())
    assert "outside" in assert_one_line_error(_cnn("stats", _write(folder, model)), 1)


def test_legitimate_external_tensors_anywhere_load_from_the_models_folder(attack):
    """Sparse values and an If-branch tensor whose data sits beside the model are read from there
    (a file of that name in the current folder is not), and nothing is left for onnxruntime."""
    from cnncli.frontend.external import external_tensors
    from cnncli.frontend.load import load_external_weights, load_model

    folder, cwd = attack
    (folder / "w.bin").write_bytes(np.full(4, 3, np.float32).tobytes())
    (cwd / "w.bin").write_bytes(np.full(4, 9, np.float32).tobytes())
    model = _hostile("sparse_initializer values", "w.bin")
    then = _branch([helper.make_node("Constant", [], ["t"], value=_external(_ones("t", [4]), "w.bin"))], "t")
    model.graph.node.append(helper.make_node("If", ["cond"], ["unused"], then_branch=then, else_branch=then))
    model.graph.initializer.append(numpy_helper.from_array(np.array(True), "cond"))
    loaded = load_model(_write(folder, model))
    assert loaded.missing_external == []
    load_external_weights(loaded)
    assert list(external_tensors(loaded.model)) == []
    dense = numpy_helper.to_array(next(t for t in loaded.model.graph.initializer if t.name == "c")).reshape(-1)
    assert dense[:4].tolist() == [3] * 4 and not dense[4:].any()  # the sparse values, made dense to run
    assert numpy_helper.to_array(loaded.model.graph.node[-1].attribute[0].g.node[0].attribute[0].t).tolist() == [3] * 4


def test_python_api_checks_a_modelproto_as_the_cli_checks_a_file(attack):
    """A ModelProto or bytes has no folder: its external data is missing, never looked for in the
    current folder; an escaping location is refused as for a file."""
    model = _hostile("ConstantOfShape value")
    for given in (model, model.SerializeToString()):
        with pytest.raises(ModelError, match=SECRET):
            cnncli.project(given, "img.png", layer=1)
    with pytest.raises(ModelError, match="outside the model's folder"):
        cnncli.stats(_hostile("If branch Constant", "../" + SECRET))


# ----------------------------------------------------------------------------- single assignment

W = init("W", [4, 3, 3, 3])


def _ssa_cases():
    conv = helper.make_node("Conv", ["x", "W"], ["y"], name="a")
    yield "two writers", make_model([conv, helper.make_node("Relu", ["x"], ["y"], name="b")], [vi("x", X)], [out()], [W])
    yield "a node overwrites the input", make_model(
        [helper.make_node("Relu", ["x"], ["x"], name="b"), helper.make_node("Conv", ["x", "W"], ["y"])], [vi("x", X)], [out()], [W])
    yield "a node overwrites an initializer", make_model(
        [helper.make_node("Conv", ["x", "W"], ["y"]), helper.make_node("Identity", ["y"], ["W"], name="b")], [vi("x", X)], [out()], [W])
    yield "one node names an output twice", make_model(
        [helper.make_node("Split", ["x"], ["s", "s"], name="b", axis=1, num_outputs=2), helper.make_node("Conv", ["s", "W"], ["y"])],
        [vi("x", [1, 6, 8, 8])], [out()], [W], opset=18)
    yield "a later conv rewrites an earlier output", make_model(
        [conv, helper.make_node("Conv", ["y", "W2"], ["y"], name="b")], [vi("x", X)], [out()], [W, init("W2", [4, 4, 1, 1])])


@pytest.mark.parametrize("case", list(_ssa_cases()), ids=lambda c: c[0])
def test_graph_that_writes_a_tensor_twice_is_damaged(tmp_path, case):
    path = tmp_path / "m.onnx"
    path.write_bytes(case[1].SerializeToString())
    msg = assert_one_line_error(_cnn("stats", path), 1)
    assert msg.startswith(f"Error: '{path}' is damaged: ") and "one writer" in msg
    with pytest.raises(ModelError, match="is damaged"):
        cnncli.stats(case[1])


# ----------------------------------------------------------------------------- sparse weights


def _sparse_conv(tmp_path, indices=(0, 5, 17)):
    values = numpy_helper.from_array(np.ones(3, np.float32), "W")
    sparse = helper.make_sparse_tensor(values, numpy_helper.from_array(np.array(indices, np.int64), "i"), [4, 3, 3, 3])
    graph = helper.make_graph([helper.make_node("Conv", ["x", "W"], ["y"], name="c")], "g", [vi("x", X)], [out()],
                              sparse_initializer=[sparse])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_conv_with_sparse_weight_is_costed(tmp_path):
    """MACs from the dense shape [4, 3, 3, 3] (4·6·6 outputs · 27); params: the 3 values stored."""
    path = _sparse_conv(tmp_path)
    result = _cnn("stats", path, "--format", "json")
    assert result.exit_code == 0, result.stderr
    layer = json.loads(result.stdout)["layers"][0]
    assert (layer["macs"], layer["params"], layer["output_shape"]) == (4 * 6 * 6 * 27, 3, [1, 4, 6, 6])


def test_conv_with_sparse_weight_runs_and_bad_indices_are_damage(tmp_path):
    """The commands that run the model see the dense weight: filter 1 holds the stored ones."""
    result = _cnn("filters", _sparse_conv(tmp_path), "--layer", 1, "--out", tmp_path / "f", "--format", "json")
    assert result.exit_code == 0, result.stderr
    for indices in ((0, 5, 170), (0, 5)):
        msg = assert_one_line_error(_cnn("filters", _sparse_conv(tmp_path, indices), "--layer", 1, "--out", tmp_path / "g"), 1)
        assert "is damaged: sparse initializer 'W'" in msg


# ----------------------------------------------------------------------------- data against dims


def _short(name, array, cut):
    t = numpy_helper.from_array(np.asarray(array), name)
    t.raw_data = t.raw_data[:cut] if cut >= 0 else t.raw_data + b"\0" * -cut
    return t


def _data_cases():
    ones = np.ones((4, 3, 3, 3), np.float32)
    conv = helper.make_node("Conv", ["x", "W"], ["y"], name="conv")
    for label, cut in (("short", 100), ("long", -8), ("not whole floats", 431)):
        yield f"weight raw_data {label}", make_model([conv], [vi("x", X)], [out()], [_short("W", ones, cut)])
    typed = init("W", [4, 3, 3, 3])
    typed.ClearField("raw_data")
    typed.float_data.extend([1.0] * 5)
    yield "weight float_data short", make_model([conv], [vi("x", X)], [out()], [typed])
    yield "Constant weight short", make_model([helper.make_node("Constant", [], ["W"], value=_short("cw", ones, 50)), conv],
                                              [vi("x", X)], [out()])
    yield "bias short", make_model([helper.make_node("Conv", ["x", "W", "B"], ["y"], name="conv")], [vi("x", X)], [out()],
                                   [init("W", [4, 3, 3, 3]), _short("B", np.ones(4, np.float32), 6)])
    yield "Reshape shape short", make_model(
        [helper.make_node("Reshape", ["x", "s"], ["x2"]), helper.make_node("Conv", ["x2", "W"], ["y"], name="conv")],
        [vi("x", X)], [out()], [init("W", [4, 3, 3, 3]), _short("s", np.array(X, np.int64), 20)])


DATA_CASES = list(_data_cases())


@pytest.mark.parametrize("case", DATA_CASES, ids=lambda c: c[0])
def test_data_that_disagrees_with_dims_is_damaged(tmp_path, case):
    path = tmp_path / "m.onnx"
    path.write_bytes(case[1].SerializeToString())
    image = tmp_path / "i.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    for command in (("project", path, image, "--layer", 1, "--channel", 0, "--out", tmp_path / "p"),
                    ("features", path, image, "--layer", 1, "--out", tmp_path / "f"),
                    ("filters", path, "--layer", 1, "--out", tmp_path / "fl"),
                    ("top", path, image, "--layer", 1, "-k", 1)):
        msg = assert_one_line_error(_cnn(*command), 1)
        assert "is damaged" in msg and "of data where its dims" in msg, (command[0], msg)


def test_shape_tensor_with_short_data_is_damaged_in_stats(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(dict(DATA_CASES)["Reshape shape short"].SerializeToString())
    assert "'s' holds 20 bytes of data where its dims (4) need 32" in assert_one_line_error(_cnn("stats", path), 1)


# ----------------------------------------------------------------------------- empty, zero, huge


def _conv(w_dims=(4, 3, 3, 3), x_dims=X, **attrs):
    w = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=list(w_dims))
    w.raw_data = b"\0" * (4 * int(np.prod(w_dims))) if 0 <= np.prod(w_dims, dtype=object) < 10**6 else b""
    return make_model([helper.make_node("Conv", ["x", "W"], ["y"], name="conv", **attrs)], [vi("x", list(x_dims))], [out()], [w])


@pytest.mark.parametrize("w_dims", [(0, 3, 3, 3), (4, 0, 3, 3)])
def test_empty_conv_weight_costs_nothing_and_is_refused_to_run(tmp_path, w_dims):
    path = tmp_path / "m.onnx"
    path.write_bytes(_conv(w_dims).SerializeToString())
    for command in ("stats", "connectivity"):
        result = _cnn(command, path, "--format", "json")
        assert result.exit_code == 0 and "Traceback" not in result.stderr, result.stderr
    assert json.loads(_cnn("stats", path, "--format", "json").stdout)["totals"]["macs"] == 0
    msg = assert_one_line_error(_cnn("filters", path, "--layer", 1, "--out", tmp_path / "f"), 1)
    assert "empty weight" in msg


WINDOW_CASES = [
    ("strides", dict(strides=[0, 0], auto_pad="SAME_UPPER")), ("strides", dict(strides=[0, 1], auto_pad="SAME_LOWER")),
    ("strides", dict(strides=[-1, -1], auto_pad="SAME_UPPER")), ("dilations", dict(dilations=[0, 0], auto_pad="SAME_UPPER")),
    ("pads", dict(pads=[-1, -1, -1, -1])), ("kernel", dict(kernel_shape=[-3, -3], auto_pad="SAME_UPPER")),
    ("group", dict(group=0)),
]


@pytest.mark.parametrize("what, attrs", WINDOW_CASES)
def test_window_attributes_no_runtime_takes_are_damage(tmp_path, what, attrs):
    path = tmp_path / "m.onnx"
    path.write_bytes(_conv(**attrs).SerializeToString())
    msg = assert_one_line_error(_cnn("stats", path), 1)
    assert "is damaged: node 'conv' (Conv) has " + what in msg


def test_pool_with_zero_stride_and_same_padding_is_damage(tmp_path):
    model = make_model([helper.make_node("MaxPool", ["x"], ["p"], name="pool", kernel_shape=[2, 2], strides=[0, 0],
                                         auto_pad="SAME_UPPER", ceil_mode=1),
                        helper.make_node("Conv", ["p", "W"], ["y"], name="conv")], [vi("x", X)], [out()], [W])
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    assert "(MaxPool) has strides [0, 0]" in assert_one_line_error(_cnn("stats", path), 1)


I64 = 2**63 - 1


@pytest.mark.parametrize("model", [
    _conv(x_dims=(1, 3, I64, 8)), _conv(x_dims=(1, 3, 2**40, 2**40)), _conv(w_dims=(4, 3, I64, 3)),
    _conv(w_dims=(2**31, 2**31, 3, 3)), _conv(w_dims=(4, 3, -3, 3)),
], ids=["input dim int64 max", "input elements overflow", "weight dim int64 max", "weight elements overflow", "negative dim"])
def test_dims_beyond_int64_are_one_line(tmp_path, model):
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    msg = assert_one_line_error(_cnn("stats", path, "--format", "json"), 1)
    assert "is damaged" in msg and ("int64" in msg or "negative dim" in msg)
    with pytest.raises(CnnError):
        cnncli.stats(model)


def test_input_shape_beyond_int64_is_bad_usage():
    from helpers import ZFNET_PAPER

    result = _cnn("stats", ZFNET_PAPER, "--input-shape", f"input=1x3x{2**40}x{2**40}")
    assert result.exit_code == 2 and "int64" in result.stderr


def test_window_larger_than_its_input_is_one_line_not_negative_sizes(tmp_path):
    """onnx's inference gives such a conv a negative output size (and cnn stats costed it with
    made-up MACs): the model's own input is an error, a user's --input-shape is bad usage."""
    from helpers import ZFNET_PAPER

    path = tmp_path / "m.onnx"
    path.write_bytes(_conv(x_dims=(1, 3, 1, 1)).SerializeToString())
    assert "does not fit its input" in assert_one_line_error(_cnn("stats", path), 1)
    result = _cnn("stats", ZFNET_PAPER, "--input-shape", "image=1x3x4x4")
    assert result.exit_code == 2 and "negative dim" in result.stderr and "Traceback" not in result.stderr
