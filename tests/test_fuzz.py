"""Property-based fuzzing (hypothesis): whatever model file a user hands `cnn stats`, `cnn project`
and `cnn features`, the only outcomes are success (exit 0) or the tool's own one-line error
(exit 1 for CnnError, 2 for usage errors), never a traceback or a stray exception.

Inputs: small random graphs built from the ops cnncli supports (random shapes, attributes, some
of them invalid on purpose, names with rich markup, unicode and control characters), random
byte strings, truncated or byte-flipped copies of the bundled models, and random graphs with one
hostile mutation (external data anywhere, a tensor written twice, raw_data of the wrong length,
zero, negative or huge dims, zero strides).

CI runs a fixed, bounded campaign (``derandomize=True``; well under a minute on 2 cores). A longer
one: ``CNNCLI_FUZZ_EXAMPLES=2000 pytest tests/test_fuzz.py`` (the numbers of a run are in the
hypothesis statistics: ``pytest --hypothesis-show-statistics``).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from cnncli.cli import cli  # noqa: E402
from helpers import REPO  # noqa: E402

SCALE = max(1, int(os.environ.get("CNNCLI_FUZZ_EXAMPLES", "0")) // 25) if os.environ.get("CNNCLI_FUZZ_EXAMPLES") else 1


def fuzz_settings(examples: int):
    return settings(
        max_examples=examples * SCALE,
        derandomize=not os.environ.get("CNNCLI_FUZZ_EXAMPLES"),  # CI: the same cases on every run
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )


WORK = Path(tempfile.mkdtemp(prefix="cnncli-fuzz-"))
atexit.register(shutil.rmtree, WORK, True)  # also when the module is collected but its tests deselected
IMAGE = WORK / "image.png"
Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(IMAGE)
MODELS = sorted((REPO / "sample_models").glob("*.onnx"))
MODEL_BYTES = {p.name: p.read_bytes() for p in MODELS}


def check_outcome(args: list[str]) -> int:
    """Run the CLI in-process; allow exit 0, or 1/2 with one 'Error: …' line and no traceback.
    Returns the exit code."""
    result = CliRunner().invoke(cli, args, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        tb = "".join(traceback.format_exception(result.exception))
        raise AssertionError(f"cnn {' '.join(args)} raised {result.exception!r}\n{tb}")
    assert result.exit_code in (0, 1, 2), (args, result.exit_code, result.stderr)
    event(f"{args[0]}: exit {result.exit_code}")  # the outcome mix, in --hypothesis-show-statistics
    assert "Traceback" not in result.stderr, (args, result.stderr)
    if result.exit_code:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert lines and lines[-1].startswith("Error: "), (args, result.stderr)
        assert sum(line.startswith("Error: ") for line in lines) == 1, (args, result.stderr)
        assert all(line.startswith(("Error: ", "Warning: ")) for line in lines), (args, result.stderr)
    return result.exit_code


# ----------------------------------------------------------------------------- random graphs

NAME_PARTS = ["conv", "[bold]x[/bold]", "[/]", "a|b", "名前", "ü", "x\ny", "%s{0}", "..", "a/b", "-", " ", "\t", "[red]", "é\u200b"]


@st.composite
def graphs(draw) -> onnx.ModelProto:
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    counter = [0]

    def name() -> str:
        counter[0] += 1
        return draw(st.sampled_from(NAME_PARTS)) + str(counter[0])  # unique, so the graph can be valid

    channels = draw(st.sampled_from([1, 3, 3, 4, 2]))
    h, w = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    batch = draw(st.sampled_from([1, 1, "N", 2]))
    x = draw(st.sampled_from(["x", "[i]in[/i]", "图像", "input:0"]))
    cur, c = x, channels
    nodes, inits, tensors = [], [], [(x, channels)]

    def weight(shape, scale=0.3):
        n = name()
        arr = rng.normal(0, scale, shape).astype(np.float32)
        if draw(st.integers(0, 30)) == 0:
            arr.flat[0] = draw(st.sampled_from([np.nan, np.inf, 1e38]))
        inits.append(numpy_helper.from_array(arr, n))
        return n

    def add(op, inputs, out_c, **attrs):
        nonlocal cur, c
        out = name()
        nodes.append(helper.make_node(op, inputs, [out], name=draw(st.sampled_from(["", name()])), **attrs))
        cur, c = out, out_c
        tensors.append((out, out_c))

    for i in range(draw(st.integers(1, 6))):
        op = "Conv" if i == 0 and draw(st.integers(0, 9)) else draw(st.sampled_from(["Conv", "Conv", "Conv", "Relu", "LeakyRelu", "MaxPool", "AveragePool", "BatchNormalization",
                                   "Add", "Concat", "LRN", "Sigmoid", "Clip", "GlobalAveragePool", "Gemm", "ConvTranspose",
                                   "Pad", "Resize", "Transpose"]))
        k = draw(st.integers(1, 4))
        stride = draw(st.integers(1, 3))
        pad = draw(st.integers(0, 2))
        if op == "Conv":
            groups = draw(st.sampled_from([1, 1, c, 2]))
            cout = draw(st.integers(1, 6)) * (groups if groups > 0 else 1)
            cin_g = max(1, c // groups) if groups else c
            ins = [cur, weight((cout, cin_g, k, k))]
            if draw(st.booleans()):
                ins.append(weight((cout,)))
            add("Conv", ins, cout, kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4,
                dilations=[draw(st.integers(1, 2))] * 2, group=groups)
        elif op == "ConvTranspose":
            cout = draw(st.integers(1, 4))
            add("ConvTranspose", [cur, weight((c, cout, k, k))], cout, strides=[stride, stride], pads=[pad] * 4)
        elif op in ("MaxPool", "AveragePool"):
            add(op, [cur], c, kernel_shape=[k, k], strides=[stride, stride], pads=[min(pad, k - 1)] * 4,
                ceil_mode=draw(st.integers(0, 1)))
        elif op == "BatchNormalization":
            add(op, [cur, weight((c,)), weight((c,)), weight((c,)), weight((c,), 0.0) if False else _positive(inits, name(), c, rng)], c)
        elif op in ("Add", "Concat"):
            other, oc = draw(st.sampled_from(tensors))
            if op == "Add":
                add("Add", [cur, other], c)
            else:
                add("Concat", [cur, other], c + oc, axis=1)
        elif op == "LRN":
            add("LRN", [cur], c, size=draw(st.sampled_from([1, 3, 5])))
        elif op == "LeakyRelu":
            add(op, [cur], c, alpha=draw(st.floats(-1, 1, allow_nan=False)))
        elif op == "Clip":
            lo, hi = name(), name()
            inits.append(numpy_helper.from_array(np.float32(0.0), lo))
            inits.append(numpy_helper.from_array(np.float32(draw(st.floats(-1, 10, allow_nan=False))), hi))
            add("Clip", [cur, lo, hi], c)
        elif op == "GlobalAveragePool":
            add(op, [cur], c)
        elif op == "Gemm":
            flat = name()
            nodes.append(helper.make_node("Flatten", [cur], [flat], name=name()))
            units = draw(st.integers(1, 8))
            features_in = draw(st.sampled_from([c, c * h * w, 7]))
            cur = flat
            add("Gemm", [flat, weight((units, features_in)), weight((units,))], units, transB=1)
            break  # a 2-D tensor ends the image part
        elif op == "Pad":
            pads = name()
            inits.append(numpy_helper.from_array(np.array([0, 0, pad, pad, 0, 0, pad, pad], np.int64), pads))
            add("Pad", [cur, pads], c, mode=draw(st.sampled_from(["constant", "reflect", "edge"])))
        elif op == "Resize":
            scales = name()
            inits.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), scales))
            add("Resize", [cur, "", scales], c, mode=draw(st.sampled_from(["nearest", "linear"])))
        elif op == "Transpose":
            add("Transpose", [cur], c, perm=draw(st.sampled_from([[0, 1, 3, 2], [0, 2, 3, 1], [0, 1, 2, 3]])))
        else:
            add(op, [cur], c)
    graph = helper.make_graph(nodes, draw(st.sampled_from(["g", "[b]g[/b]", "グラフ"])),
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [batch, channels, h, w])],
                              [helper.make_tensor_value_info(cur, TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", draw(st.sampled_from([11, 13, 17])))])
    model.ir_version = 8
    return model


def _positive(inits, n, c, rng) -> str:
    inits.append(numpy_helper.from_array(rng.uniform(0.5, 2.0, c).astype(np.float32), n))
    return n


@fuzz_settings(25)
@given(model=graphs(), fmt=st.sampled_from(["table", "json", "jsonl", "csv", "markdown"]),
       mode=st.sampled_from(["deconvnet", "backprop", "guided"]), data=st.data())
def test_random_graphs(model, fmt, mode, data):
    convs = sum(n.op_type == "Conv" for n in model.graph.node)
    layer = data.draw(st.integers(1, max(1, convs) + (1 if data.draw(st.integers(0, 9)) == 0 else 0)), label="layer")
    d = Path(tempfile.mkdtemp(dir=WORK))
    path = d / data.draw(st.sampled_from(["m.onnx", "[red]a[b]c.onnx", "模型.onnx"]))
    path.write_bytes(model.SerializeToString())
    check_outcome(["stats", str(path), "--format", fmt])
    check_outcome(["connectivity", str(path), "--format", fmt])
    size = ["--size", "20x20"] if data.draw(st.booleans()) else []
    check_outcome(["project", str(path), str(IMAGE), "--layer", str(layer), "--channel", "0", "--mode", mode,
                   "--out", str(d / "p"), "--format", fmt, *size])
    check_outcome(["features", str(path), str(IMAGE), "--layer", str(layer), "--out", str(d / "f"), "--format", fmt, *size])
    shutil.rmtree(d, ignore_errors=True)


# ----------------------------------------------------------------------------- broken files


@fuzz_settings(30)
@given(blob=st.binary(max_size=3000), prefix=st.sampled_from([b"", b"\x08\x08\x12", b"\x89PNG\r\n\x1a\n", b"\x93NUMPY"]))
def test_random_bytes(blob, prefix):
    d = Path(tempfile.mkdtemp(dir=WORK))
    path = d / "random.onnx"
    path.write_bytes(prefix + blob)
    check_outcome(["stats", str(path), "--format", "json"])
    check_outcome(["features", str(path), str(IMAGE), "--layer", "1", "--out", str(d / "f")])
    shutil.rmtree(d, ignore_errors=True)


@fuzz_settings(30)
@given(which=st.sampled_from(sorted(MODEL_BYTES)), data=st.data())
def test_truncated_and_flipped_models(which, data):
    raw = bytearray(MODEL_BYTES[which])
    cut = len(raw) if data.draw(st.booleans(), label="whole") else data.draw(st.integers(0, len(raw)), label="cut")
    blob = raw[:cut]
    for _ in range(data.draw(st.integers(0, 3), label="flips")):
        if blob:
            i = data.draw(st.integers(0, len(blob) - 1), label="at")
            blob[i] ^= data.draw(st.integers(1, 255), label="xor")
    d = Path(tempfile.mkdtemp(dir=WORK))
    path = d / which
    path.write_bytes(bytes(blob))
    check_outcome(["stats", str(path), "--format", "csv"])
    if which == "zfnet_mini.onnx":
        check_outcome(["project", str(path), str(IMAGE), "--layer", "1", "--channel", "0", "--out", str(d / "p")])
        check_outcome(["features", str(path), str(IMAGE), "--layer", "2", "--out", str(d / "f")])
    shutil.rmtree(d, ignore_errors=True)


# ----------------------------------------------------------------------------- hostile mutations

SECRET = "cwd_secret.bin"  # in the folder the CLI runs from, never beside the model
LOCATIONS = [SECRET, "../" + SECRET, "/etc/passwd", "", "sub/../../" + SECRET, "w.bin", "w.bin"]  # w.bin: beside the model


def _to_external(t: TensorProto, location: str, payload: bytearray) -> None:
    """Move ``t``'s data out to ``location``; ``payload`` collects what w.bin (beside the model) holds."""
    raw = t.raw_data
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(len(payload))), ("length", str(len(raw)))):
        t.external_data.add(key=key, value=value)
    payload.extend(raw)


def _mutate(model: onnx.ModelProto, data, payload: bytearray) -> bool:
    """Apply one hostile mutation; True when it names external data that is not beside the model
    (running the model must then fail)."""
    g = model.graph
    kind = data.draw(st.sampled_from(["external", "external", "ssa", "raw_data", "dims", "window"]), label="mutation")
    event(f"mutation: {kind}")
    if kind == "external":
        location = data.draw(st.sampled_from(LOCATIONS), label="location")
        where = data.draw(st.sampled_from(["initializer", "ConstantOfShape", "If", "sparse", "Constant"]), label="where")
        t = numpy_helper.from_array(np.ones([1], np.float32), "ext")
        _to_external(t, location, payload)
        x = g.input[0].name
        if where == "initializer" and g.initializer:
            _to_external(data.draw(st.sampled_from(list(g.initializer)), label="init"), location, payload)
        elif where == "ConstantOfShape":
            g.initializer.append(numpy_helper.from_array(np.array([1], np.int64), "ext_shape"))
            g.node.insert(0, helper.make_node("ConstantOfShape", ["ext_shape"], ["ext_c"], value=t))
            g.node.insert(1, helper.make_node("Add", [x, "ext_c"], ["ext_x"]))
        elif where == "If":
            branch = helper.make_graph([helper.make_node("Constant", [], ["ext_t"], value=t)], "b", [],
                                       [helper.make_tensor_value_info("ext_t", TensorProto.FLOAT, [1])])
            g.initializer.append(numpy_helper.from_array(np.array(True), "ext_cond"))
            g.node.insert(0, helper.make_node("If", ["ext_cond"], ["ext_c"], then_branch=branch, else_branch=branch))
            g.node.insert(1, helper.make_node("Add", [x, "ext_c"], ["ext_x"]))
        elif where == "sparse":
            g.sparse_initializer.append(helper.make_sparse_tensor(t, numpy_helper.from_array(np.array([0], np.int64), "i"), [1]))
            g.node.insert(0, helper.make_node("Add", [x, "ext"], ["ext_x"]))
        else:
            g.node.insert(0, helper.make_node("Constant", [], ["ext_c"], value=t))
            g.node.insert(1, helper.make_node("Add", [x, "ext_c"], ["ext_x"]))
        for node in g.node[2:]:  # the first real node reads the changed input
            node.input[:] = ["ext_x" if i == x else i for i in node.input]
        return location != "w.bin"
    if kind == "ssa":
        names = [g.input[0].name, *(t.name for t in g.initializer), *(o for n in g.node for o in n.output)]
        node = data.draw(st.sampled_from(list(g.node)), label="node")
        node.output[0] = data.draw(st.sampled_from(names), label="writes")
        if data.draw(st.booleans(), label="twice"):
            node.output.append(node.output[0])
    elif kind == "raw_data" and g.initializer:
        t = data.draw(st.sampled_from(list(g.initializer)), label="init")
        cut = data.draw(st.integers(-9, 9), label="cut")
        t.raw_data = t.raw_data[:cut] if cut < 0 else t.raw_data + b"\x01" * cut
    elif kind == "dims":
        value = data.draw(st.sampled_from([0, 0, -1, 2**31, 2**63 - 1]), label="dim")
        if g.initializer and data.draw(st.booleans(), label="init"):
            t = data.draw(st.sampled_from(list(g.initializer)), label="which")
            if t.dims:
                t.dims[data.draw(st.integers(0, len(t.dims) - 1), label="axis")] = value
        else:
            dims = g.input[0].type.tensor_type.shape.dim
            dims[data.draw(st.integers(0, len(dims) - 1), label="axis")].dim_value = value
    elif kind == "window":
        windowed = [n for n in g.node if n.op_type in ("Conv", "ConvTranspose", "MaxPool", "AveragePool")]
        if windowed:
            node = data.draw(st.sampled_from(windowed), label="node")
            name = data.draw(st.sampled_from(["strides", "dilations", "pads", "kernel_shape"]), label="attr")
            value = data.draw(st.sampled_from([0, -1]), label="value")
            del node.attribute[:]  # the attributes again, one of them bad, maybe with SAME padding
            node.attribute.append(helper.make_attribute(name, [value] * (4 if name == "pads" else 2)))
            if data.draw(st.booleans(), label="same"):
                node.attribute.append(helper.make_attribute("auto_pad", data.draw(st.sampled_from(["SAME_UPPER", "SAME_LOWER"]))))
    return False


@fuzz_settings(20)
@given(model=graphs(), data=st.data())
def test_hostile_mutations(model, data):
    """External data anywhere (a Constant, ConstantOfShape, If branch, sparse initializer), a tensor
    written twice, raw_data of the wrong length, zero, negative or huge dims, zero strides: one
    line or a result, never a traceback; external data not beside the model is never run."""
    payload = bytearray()
    escapes = _mutate(model, data, payload)
    d = Path(tempfile.mkdtemp(dir=WORK))
    (d / "model").mkdir()
    (d / "model" / "w.bin").write_bytes(bytes(payload) if data.draw(st.booleans(), label="whole w.bin") else bytes(payload[:2]))
    (d / "cwd").mkdir()
    (d / "cwd" / SECRET).write_bytes(np.ones(64, np.float32).tobytes())
    path = d / "model" / "m.onnx"
    path.write_bytes(model.SerializeToString())
    before = os.getcwd()
    os.chdir(d / "cwd")
    try:
        check_outcome(["stats", str(path), "--format", "json"])
        code = check_outcome(["project", str(path), str(IMAGE), "--layer", "1", "--channel", "0", "--out", str(d / "p")])
        check_outcome(["features", str(path), str(IMAGE), "--layer", "1", "--out", str(d / "f")])
    finally:
        os.chdir(before)
    assert not (escapes and code == 0), "a model whose external data is not beside it was run"
    shutil.rmtree(d, ignore_errors=True)
