"""Nothing overwritten, nothing stale, nothing half-written (issue 9): output names carry the input
and the options that change the pixels, long names are shortened before the work, concurrent runs
into one folder keep their files apart, `cnn demo` replaces its own previous outputs only, and an
--out that cannot take files is a one-line error (exit 1), whatever the permission bits say.
"""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from cnncli.cli import cli
from helpers import PNG_MAGIC, REPO, assert_one_line_error


def tiny_model(tensor_name: str = "r1", preprocess: str | None = None) -> onnx.ModelProto:
    """x [1,3,16,16] → conv (4 channels, 3x3 pad 1) → relu (output ``tensor_name``)."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "W"], ["c1"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], [tensor_name], name="relu1")]
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info(tensor_name, TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if preprocess:
        model.metadata_props.add(key="cnncli.preprocess", value=preprocess)
    return model


@pytest.fixture()
def files(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    onnx.save(tiny_model(), str(d / "tiny.onnx"))
    rng = np.random.default_rng(1)
    for name in ("cat", "dog"):
        Image.fromarray((rng.random((20, 20, 3)) * 255).astype(np.uint8)).save(d / f"{name}.png")
    return d


def project(*args):
    return CliRunner().invoke(cli, ["project", *map(str, args), "--format", "json"])


def ok_json(result) -> dict:
    assert result.exit_code == 0, (result.stderr, result.exception)
    return json.loads(result.stdout)


def all_files(doc) -> list[str]:
    return [f for r in doc["results"] for f in r["files"].values()] + ([doc["contact_sheet"]] if doc.get("contact_sheet") else [])


def test_a_second_image_keeps_the_first_images_files(files, tmp_path):
    out = tmp_path / "out"
    first = ok_json(project(files / "tiny.onnx", files / "cat.png", "--layer", 1, "--channel", "all", "--out", out))
    before = {f: Path(f).read_bytes() for f in all_files(first)}
    second = ok_json(project(files / "tiny.onnx", files / "dog.png", "--layer", 1, "--channel", "all", "--out", out))
    assert not set(before) & set(all_files(second))
    for f, data in before.items():  # still there, unchanged
        assert Path(f).read_bytes() == data
    assert all("_cat-" in Path(f).name for f in before) and all("_dog-" in Path(f).name for f in all_files(second))
    assert len(list(out.iterdir())) == 2 * (2 * 4 + 1)  # png + figure, 4 channels, a contact sheet; 2 images


def test_keep_norm_and_preset_are_in_the_names_when_not_default(files, tmp_path):
    out = tmp_path / "out"
    runs = [(), ("--keep", "max"), ("--norm", "minmax"), ("--preset", "caffe"), ("--mean", "0.5")]
    names = []
    for extra in runs:
        doc = ok_json(project(files / "tiny.onnx", files / "cat.png", "--layer", 1, "--channel", 0, "--out", out, *extra))
        names.append(Path(doc["results"][0]["files"]["png"]).name)
    assert re.fullmatch(r"tiny_cat-[0-9a-f]{8}_layer1_c0_deconvnet\.png", names[0])  # the defaults add nothing
    assert "keep-max" in names[1] and "norm-minmax" in names[2] and "caffe" in names[3]
    assert len(set(names)) == len(names)
    assert len(list(out.glob("*.png"))) == 2 * len(runs)


def test_long_tensor_model_and_image_names_are_shortened_before_the_work(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    tensor = "t" * 300
    model = d / ("m" * 250 + ".onnx")  # 255 bytes: the longest name a file system takes
    onnx.save(tiny_model(tensor), str(model))
    image = d / ("i" * 251 + ".png")
    Image.new("RGB", (16, 16), (10, 200, 30)).save(image)
    out = tmp_path / "out"
    doc = ok_json(project(model, image, "--tensor", tensor, "--channel", "all", "--out", out, "--save-npy"))
    written = all_files(doc)
    assert len(written) == 3 * 4 + 1  # png, figure, npy per channel; the contact sheet
    for f in written:
        name = Path(f).name
        assert len(name.encode()) <= 255
        assert Path(f).read_bytes()[:8] in (PNG_MAGIC, b"\x93NUMPY\x01\x00"[:8])
    # shortened parts keep a hash of the whole name: another long name gives other files
    other = d / ("m" * 249 + "n.onnx")
    onnx.save(tiny_model(tensor), str(other))
    doc2 = ok_json(project(other, image, "--tensor", tensor, "--channel", 0, "--out", out))
    assert not set(all_files(doc2)) & set(written)


def test_two_concurrent_runs_into_one_folder_keep_their_files_apart(files, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "cnncli", "project", str(files / "tiny.onnx"), "--layer", "1", "--channel", "all",
           "--out", str(out), "--format", "json", "--save-npy"]
    procs = [subprocess.Popen(cmd[:5] + [str(files / f"{n}.png")] + cmd[5:], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=REPO) for n in ("cat", "dog", "cat")]
    docs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=180)
        assert p.returncode == 0, stderr
        docs.append(json.loads(stdout))
    assert sorted(all_files(docs[0])) == sorted(all_files(docs[2]))  # the same input: the same names
    assert not set(all_files(docs[0])) & set(all_files(docs[1]))
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(Path(f).name for f in set(all_files(docs[0]) + all_files(docs[1])))  # no temporary left
    cat, dog = ({r["channel"]: np.load(r["files"]["npy"]) for r in doc["results"]} for doc in docs[:2])
    for c in cat:  # complete arrays, each the projection of its own image
        assert cat[c].shape == dog[c].shape == (1, 3, 16, 16)
        assert not np.allclose(cat[c], dog[c])
    for f in all_files(docs[0]) + all_files(docs[1]):
        if f.endswith(".png"):
            Image.open(f).load()


def test_project_honours_the_models_preprocessing_preset(tmp_path, files):
    model = tmp_path / "caffe.onnx"
    onnx.save(tiny_model(preprocess="caffe"), str(model))
    doc = ok_json(project(model, files / "cat.png", "--tensor", "x", "--channel", 0, "--out", tmp_path / "o"))
    assert doc["preprocess"]["preset"] == "caffe" and doc["preprocess"]["channel_order"] == "BGR"
    pixels = np.asarray(Image.open(files / "cat.png").convert("RGB").resize((16, 16), Image.Resampling.BILINEAR))
    assert doc["results"][0]["max_activation"] == pytest.approx(float(pixels[:, :, 2].max()) - 103.939, abs=1e-3)
    assert re.fullmatch(r"caffe_cat-[0-9a-f]{8}_x_c0_deconvnet\.png", Path(doc["results"][0]["files"]["png"]).name)  # no tag
    # --preset still wins over the model's
    doc = ok_json(project(model, files / "cat.png", "--tensor", "x", "--channel", 0, "--preset", "unit", "--out", tmp_path / "o"))
    assert doc["preprocess"]["preset"] == "unit"


# ----------------------------------------------------------------------------- unwritable --out


@pytest.mark.parametrize("command", ["project", "top", "features", "filters", "demo"])
def test_out_naming_an_existing_file_exits_1(files, tmp_path, command):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    args = {
        "project": ["project", files / "tiny.onnx", files / "cat.png", "--layer", 1],
        "top": ["top", files / "tiny.onnx", files, "--layer", 1],
        "features": ["features", files / "tiny.onnx", files / "cat.png", "--layer", 1],
        "filters": ["filters", files / "tiny.onnx", "--layer", 1],
        "demo": ["demo"],
    }[command]
    result = CliRunner().invoke(cli, [*map(str, args), "--out", str(blocker)])
    msg = assert_one_line_error(result, 1)
    assert "a_file" in msg
    assert blocker.read_text() == "x"


@pytest.mark.skipif(not (Path("/proc/self").is_dir() and Path("/sys/kernel").is_dir()), reason="needs /proc and /sys")
@pytest.mark.parametrize("where", ["/proc/cnncli-out", "/sys/cnncli-out"])
@pytest.mark.parametrize("command", ["project", "top", "features", "filters"])
def test_out_under_proc_is_a_one_line_error_before_the_work(files, command, where, monkeypatch):
    """/proc and /sys pass a permission check for root (and look writable to os.access), but take no files."""
    import cnncli.runtime.sessions

    def no_session(*a, **kw):
        raise AssertionError("the work started")

    monkeypatch.setattr(cnncli.runtime.sessions, "make_session", no_session)
    args = {
        "project": ["project", files / "tiny.onnx", files / "cat.png", "--layer", 1],
        "top": ["top", files / "tiny.onnx", files, "--layer", 1],
        "features": ["features", files / "tiny.onnx", files / "cat.png", "--layer", 1],
        "filters": ["filters", files / "tiny.onnx", "--layer", 1],
    }[command]
    result = CliRunner().invoke(cli, [*map(str, args), "--out", where])
    msg = assert_one_line_error(result, 1)
    assert where in msg


def test_a_full_disk_is_a_one_line_error_and_leaves_no_partial_file(files, tmp_path, monkeypatch):
    from PIL import PngImagePlugin

    real = PngImagePlugin._save
    calls = []

    def full(im, fp, filename, *a, **kw):  # the third PNG hits a full disk halfway
        calls.append(filename)
        if len(calls) == 3:
            fp.write(b"\x89PNG partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(im, fp, filename, *a, **kw)

    monkeypatch.setattr(PngImagePlugin, "_save", full)
    monkeypatch.setitem(Image.SAVE, "PNG", full)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["project", str(files / "tiny.onnx"), str(files / "cat.png"), "--layer", "1",
                                      "--channel", "all", "--out", str(out)])
    msg = assert_one_line_error(result, 1)
    assert "No space left on device" in msg
    for p in out.iterdir():  # what is there is complete; no temporary file is left
        assert not p.name.startswith(".")
        assert p.read_bytes()[:8] == PNG_MAGIC
        Image.open(p).load()


# ----------------------------------------------------------------------------- demo


def test_demo_twice_leaves_only_what_the_second_run_shows(tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "mine.txt").write_text("not the demo's")  # the user's own file in the folder
    (out / "img").mkdir()
    (out / "img" / "star_layer1_c999.png").write_bytes(b"user's")  # looks like the demo's, but not in its manifest
    r = CliRunner().invoke(cli, ["demo", "--out", str(out), "--top", "4", "--quiet", "--format", "json"])
    assert r.exit_code == 0, r.stderr
    first = set(p.name for p in (out / "img").iterdir())
    r = CliRunner().invoke(cli, ["demo", "--out", str(out), "--top", "2", "--quiet", "--format", "json"])
    assert r.exit_code == 0, r.stderr
    page = (out / "index.html").read_text(encoding="utf-8")
    shown = {src.split("/", 1)[1] for src in __import__("re").findall(r"src='(img/[^']+)'", page)}
    left = set(p.name for p in (out / "img").iterdir())
    assert left == shown | {"star_layer1_c999.png"}
    assert len(first) > len(left)  # the --top 4 run's extra pictures are gone
    assert (out / "mine.txt").read_text() == "not the demo's"
    assert (out / "img" / "star_layer1_c999.png").read_bytes() == b"user's"
