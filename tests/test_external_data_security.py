"""External data is read only from inside the model's folder: `..`, absolute locations and
symlinks that resolve outside are refused with one line, whatever onnx version is installed,
and an absolute or escaping location is refused without being looked at."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import helper, numpy_helper

from cnncli.cli import cli
from helpers import assert_one_line_error, init, make_model, out, vi

W_VALUES = np.arange(4 * 3 * 3 * 3, dtype=np.float32).reshape(4, 3, 3, 3)


def _model_with_location(folder: Path, location: str) -> Path:
    """m.onnx in ``folder``: one Conv whose weight W is external data at ``location`` (as written
    in the file: the text is not checked or resolved by the writer)."""
    w = numpy_helper.from_array(W_VALUES, "W")
    w.ClearField("raw_data")
    w.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(W_VALUES.nbytes))):
        w.external_data.add(key=key, value=value)
    model = make_model([helper.make_node("Conv", ["x", "W"], ["y"], name="conv")], [vi("x", [1, 3, 8, 8])], [out()], [w])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "m.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def _secret(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(W_VALUES.tobytes())
    return path


def _stats(path: Path):
    return CliRunner().invoke(cli, ["stats", str(path), "--format", "json"])


def test_dotdot_location_refused(tmp_path):
    _secret(tmp_path / "secret.bin")
    path = _model_with_location(tmp_path / "models", "../secret.bin")
    msg = assert_one_line_error(_stats(path), 1)
    assert "../secret.bin" in msg and "outside" in msg


def test_dotdot_in_the_middle_refused(tmp_path):
    _secret(tmp_path / "secret.bin")
    (tmp_path / "models" / "sub").mkdir(parents=True)
    path = _model_with_location(tmp_path / "models", "sub/../../secret.bin")
    assert "outside" in assert_one_line_error(_stats(path), 1)


def test_dotdot_that_stays_inside_is_fine(tmp_path):
    (tmp_path / "models" / "sub").mkdir(parents=True)
    _secret(tmp_path / "models" / "w.bin")
    path = _model_with_location(tmp_path / "models", "sub/../w.bin")
    r = _stats(path)
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["totals"]["params"] == W_VALUES.size


@pytest.mark.parametrize("exists", [True, False])
def test_absolute_location_refused_without_looking(tmp_path, monkeypatch, exists):
    """The answer is the same whether the absolute path exists or not, and no file system call
    ever sees it."""
    target = tmp_path / "elsewhere" / "abs.bin"
    if exists:
        _secret(target)
    path = _model_with_location(tmp_path / "models", str(target))
    seen: list[str] = []

    def spy(fn):
        def wrapper(p, *a, **k):
            seen.append(os.fspath(p) if isinstance(p, (str, os.PathLike)) else repr(p))
            return fn(p, *a, **k)
        return wrapper

    for mod, name in ((os.path, "exists"), (os.path, "isfile"), (os.path, "realpath"), (os, "stat"), (os, "lstat"),
                      (os.path, "getsize"), (os, "open")):
        monkeypatch.setattr(mod, name, spy(getattr(mod, name)))
    import builtins

    monkeypatch.setattr(builtins, "open", spy(builtins.open))
    msg = assert_one_line_error(_stats(path), 1)
    assert "absolute" in msg and str(target) in msg
    assert not any("abs.bin" in s for s in seen), [s for s in seen if "abs.bin" in s]


def test_absolute_location_same_answer_either_way(tmp_path):
    there = _secret(tmp_path / "a" / "abs.bin")
    msgs = []
    for target in (there, tmp_path / "a" / "nosuch.bin"):
        path = _model_with_location(tmp_path / f"m_{target.stem}", str(target))
        msgs.append(assert_one_line_error(_stats(path), 1).replace(str(target), "<T>").replace(str(path), "<M>"))
    assert msgs[0] == msgs[1]


def test_symlink_out_of_the_folder_refused(tmp_path):
    secret = _secret(tmp_path / "outside" / "secret.bin")
    path = _model_with_location(tmp_path / "models", "w.bin")
    (tmp_path / "models" / "w.bin").symlink_to(secret)
    msg = assert_one_line_error(_stats(path), 1)
    assert "w.bin" in msg and "outside" in msg


def test_symlinked_folder_out_of_the_folder_refused(tmp_path):
    _secret(tmp_path / "outside" / "w.bin")
    path = _model_with_location(tmp_path / "models", "data/w.bin")
    (tmp_path / "models" / "data").symlink_to(tmp_path / "outside", target_is_directory=True)
    assert "outside" in assert_one_line_error(_stats(path), 1)


def test_symlink_inside_the_folder_is_fine(tmp_path):
    _secret(tmp_path / "models" / "real.bin")
    path = _model_with_location(tmp_path / "models", "w.bin")
    (tmp_path / "models" / "w.bin").symlink_to(tmp_path / "models" / "real.bin")
    r = _stats(path)
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["totals"]["params"] == W_VALUES.size


def test_refused_before_onnx_reads_anything(tmp_path, monkeypatch):
    """cnncli's own check runs first, so the result does not depend on the onnx version's checks."""
    import onnx.external_data_helper as edh

    def boom(*a, **k):
        raise AssertionError("onnx's external data loader was called")

    monkeypatch.setattr(edh, "load_external_data_for_tensor", boom)
    monkeypatch.setattr(edh, "load_external_data_for_model", boom)
    secret = _secret(tmp_path / "outside" / "secret.bin")
    path = _model_with_location(tmp_path / "models", "w.bin")
    (tmp_path / "models" / "w.bin").symlink_to(secret)
    assert_one_line_error(_stats(path), 1)


def test_weights_loader_refuses_too(tmp_path):
    """The loader that brings weights in for running the model (project, top, features)."""
    from cnncli.errors import ModelError
    from cnncli.frontend.load import LoadedModel, load_external_weights

    _secret(tmp_path / "secret.bin")
    path = _model_with_location(tmp_path / "models", "../secret.bin")
    model = onnx.load(str(path), load_external_data=False)
    loaded = LoadedModel(model=model, source=str(path), base_dir=path.parent)
    with pytest.raises(ModelError, match="outside"):
        load_external_weights(loaded)
    assert model.graph.initializer[0].data_location == onnx.TensorProto.EXTERNAL  # nothing read


def test_project_refuses(tmp_path):
    from PIL import Image

    _secret(tmp_path / "secret.bin")
    path = _model_with_location(tmp_path / "models", "../secret.bin")
    img = tmp_path / "img.png"
    Image.new("RGB", (8, 8)).save(img)
    r = CliRunner().invoke(cli, ["project", str(path), str(img), "--layer", "1", "--channel", "0",
                                 "--out", str(tmp_path / "out")])
    assert "outside" in assert_one_line_error(r, 1)
