"""Model files that parse but are damaged (a flipped byte): a one-line error naming the damage,
never a traceback; and a crash on a model that is fine still surfaces as the bug it is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import AttributeProto

import cnncli
from cnncli.cli import cli
from cnncli.errors import ModelError
from cnncli.frontend.wellformed import check_wellformed
from helpers import REPO, assert_one_line_error, conv_model

MINI = REPO / "sample_models" / "zfnet_mini.onnx"
STAR = REPO / "sample_models" / "images" / "star.png"


def _flipped(tmp_path: Path, offset: int, mask: int = 0x80) -> Path:
    data = bytearray(MINI.read_bytes())
    data[offset] ^= mask
    path = tmp_path / "flipped.onnx"
    path.write_bytes(bytes(data))
    return path


def _conv_with_float_kernel(tmp_path: Path) -> Path:
    """A Conv whose kernel_shape is FLOATS (its schema says INTS), as one flipped type byte makes it."""
    model = conv_model((1, 3, 8, 8), (4, 3, 3, 3), kernel_shape=[3, 3])
    attr = next(a for a in model.graph.node[0].attribute if a.name == "kernel_shape")
    attr.type = AttributeProto.FLOATS
    attr.floats.extend([3.0, 3.0])
    del attr.ints[:]
    path = tmp_path / "float_kernel.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_op_type_that_is_not_utf8_is_one_line(tmp_path):
    path = _flipped(tmp_path, 384)  # the LRN's op type becomes b'\xccRN'
    model = onnx.ModelProto()
    model.ParseFromString(path.read_bytes())
    assert any(type(n.op_type) is bytes for n in model.graph.node)  # the damage this test is about
    result = CliRunner().invoke(cli, ["stats", str(path), "--format", "json"])
    line = assert_one_line_error(result, 1)
    assert "damaged" in line and "UTF-8" in line


def test_graph_name_that_is_not_utf8_is_one_line(tmp_path):
    data = bytearray(MINI.read_bytes())
    model = onnx.load(str(MINI))
    graph_name = model.graph.name.encode()
    at = data.index(graph_name)  # the graph's name as stored (no other string of the file matches it first)
    data[at] ^= 0x80
    path = tmp_path / "flipped_name.onnx"
    path.write_bytes(bytes(data))
    line = assert_one_line_error(CliRunner().invoke(cli, ["stats", str(path), "--format", "csv"]), 1)
    assert "damaged" in line


@pytest.mark.parametrize("command", ["stats", "project"])
def test_attribute_of_the_wrong_type_is_one_line(tmp_path, command):
    path = _conv_with_float_kernel(tmp_path)
    args = [command, str(path)]
    if command == "project":
        npy = tmp_path / "x.npy"
        np.save(npy, np.zeros((1, 3, 8, 8), np.float32))
        args += [str(npy), "--layer", "1", "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(cli, args)
    line = assert_one_line_error(result, 1)
    assert "kernel_shape" in line and "FLOATS" in line and "INTS" in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_the_api_names_the_damage_too(tmp_path):
    with pytest.raises(ModelError, match="kernel_shape"):
        cnncli.stats(_conv_with_float_kernel(tmp_path))


def test_window_attributes_that_disagree():
    model = conv_model((1, 3, 8, 8), (4, 3, 3, 3), kernel_shape=[3, 3], pads=[1, 1, 1])
    with pytest.raises(ModelError, match="pads has 3"):
        check_wellformed(model, "m.onnx")


def test_initializer_without_a_data_type():
    model = conv_model((1, 3, 8, 8), (4, 3, 3, 3), kernel_shape=[3, 3])
    model.graph.initializer[0].data_type = 0
    with pytest.raises(ModelError, match="initializer 'W' has no valid data type"):
        check_wellformed(model, "m.onnx")


def test_unknown_ops_and_custom_domains_are_not_judged():
    model = conv_model((1, 3, 8, 8), (4, 3, 3, 3), kernel_shape=[3, 3])
    node = model.graph.node[0]
    node.op_type, node.domain = "MyConv", "com.example"
    model.opset_import.add(domain="com.example", version=1)
    check_wellformed(model, "m.onnx")  # passes: no schema to judge it by


MODELS = sorted([*REPO.glob("sample_models/*.onnx"), *REPO.glob("tests/fixtures/exporters/*.onnx")])


@pytest.mark.parametrize("path", MODELS, ids=[p.name for p in MODELS])
def test_every_committed_model_is_well_formed(path):
    check_wellformed(onnx.load(str(path), load_external_data=False), path.name)


def test_a_crash_on_a_sound_model_is_not_blamed_on_the_file(monkeypatch):
    import cnncli.costs.stats as stats_module

    def broken(graph):
        raise TypeError("a bug in cnncli")

    monkeypatch.setattr(stats_module, "compute_stats", broken)
    with pytest.raises(TypeError, match="a bug in cnncli"):
        cnncli.stats(MINI)
