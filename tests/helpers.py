"""Shared builders for tiny ONNX models and small helpers for the cost and CLI tests.

Models are built in code with ``onnx.helper`` so every expected number in a test can be worked
out by hand from the shapes written next to it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parent.parent
ZFNET_PAPER = REPO / "sample_models" / "zfnet_paper.onnx"
LIGHT_DIR = Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light"

FLOAT = TensorProto.FLOAT
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def vi(name: str, shape, elem_type: int = FLOAT) -> onnx.ValueInfoProto:
    """A value_info (graph input/output); ``shape=None`` leaves the shape out."""
    return helper.make_tensor_value_info(name, elem_type, shape)


def init(name: str, shape, dtype=np.float32, value=None) -> onnx.TensorProto:
    """An initializer of ``shape`` filled with zeros (or ``value`` when given)."""
    if value is not None:
        arr = np.asarray(value, dtype=dtype).reshape(shape)
    else:
        arr = np.zeros(shape, dtype=dtype)
    return numpy_helper.from_array(arr, name)


def make_model(nodes, inputs, outputs, initializers=(), opset: int = 17, extra_opsets=()) -> onnx.ModelProto:
    graph = helper.make_graph(list(nodes), "test_graph", list(inputs), list(outputs), list(initializers))
    opsets = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, v) for d, v in extra_opsets)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="cnncli-tests")
    model.ir_version = 8
    return model


def out(name: str = "y") -> onnx.ValueInfoProto:
    """A graph output with no declared shape (shape inference fills it)."""
    return vi(name, None)


def conv_model(
    x_shape,
    w_shape,
    bias: bool = False,
    x_name: str = "x",
    **conv_attrs,
) -> onnx.ModelProto:
    """One Conv node named 'conv' reading input ``x_name`` and initializer W (and B)."""
    inits = [init("W", w_shape)]
    ins = [x_name, "W"]
    if bias:
        inits.append(init("B", [w_shape[0]]))
        ins.append("B")
    node = helper.make_node("Conv", ins, ["y"], name="conv", **conv_attrs)
    return make_model([node], [vi(x_name, x_shape)], [out()], inits)


def stats_of(model: onnx.ModelProto, batch: int = 1, input_shapes=None):
    """Run the library the CLI runs: analyse the graph, then compute the rows and totals."""
    from cnncli.frontend.graph import analyse
    from cnncli.costs.stats import compute_stats

    return compute_stats(analyse(model, batch=batch, input_shapes=input_shapes))


def row(result, name: str):
    """The one row called ``name`` (fails when there are none or several)."""
    found = [r for r in result.layers if r.name == name]
    assert len(found) == 1, f"expected one row '{name}', got {[r.name for r in result.layers]}"
    return found[0]


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def loop_model() -> onnx.ModelProto:
    """x 1x4x6x6 -> Loop (3 trips, body: Relu) -> y; Loop bodies are data dependent."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Relu", ["v_in"], ["v_out"]),
        ],
        "body",
        [vi("iter", [], TensorProto.INT64), vi("cond_in", [], TensorProto.BOOL), vi("v_in", [1, 4, 6, 6])],
        [vi("cond_out", [], TensorProto.BOOL), vi("v_out", [1, 4, 6, 6])],
    )
    nodes = [helper.make_node("Loop", ["trips", "cond", "x"], ["y"], name="loop", body=body)]
    inits = [init("trips", [], np.int64, 3), init("cond", [], np.bool_, True)]
    return make_model(nodes, [vi("x", [1, 4, 6, 6])], [out()], inits)


def assert_one_line_error(result, code: int) -> str:
    """A CliRunner result that failed with ``code``: one 'Error: ...' line on stderr, no
    traceback, no stray exception and nothing on stdout. Returns the line."""
    assert result.exit_code == code, f"exit {result.exit_code}, stderr: {result.stderr!r}, exc: {result.exception!r}"
    assert "Traceback" not in result.stderr
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # no stray exception
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    assert result.stdout == ""
    return lines[0]
