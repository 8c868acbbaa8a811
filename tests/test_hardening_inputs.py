"""Every input a user can hand `cnn project`, `cnn top` and `cnn features` (issue 9): float16
models, onnxruntime failures, Ctrl-C, runs too big for the machine, 16-bit and rotated images,
duplicate image paths, bad --mean/--std, channels-last models, inputs the layer does not need,
unreadable image lists, models without convs, and stderr kept to one line per message.

Models are built here with onnx.helper; expected values come from an independent source (a
float32 twin of a float16 model, a plain numpy conversion of a 16-bit image, hand-counted bytes).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from cnncli.cli import cli
from helpers import REPO, assert_one_line_error, init, make_model, out, save, vi

F16 = TensorProto.FLOAT16
CNN = [sys.executable, "-c", "from cnncli.cli import main; main()"]
ZFNET_MINI = REPO / "sample_models" / "zfnet_mini.onnx"


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def write_images(folder: Path, n: int, size: int = 16, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        p = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def small_net(elem=TensorProto.FLOAT, batch="N", seed: int = 0) -> onnx.ModelProto:
    """x [N,3,16,16] → conv1 3x3 (4) → relu → maxpool 2x2 → conv2 3x3 (6) → relu, in ``elem``
    (weights rounded to float16 in both dtypes, so a float32 twin holds the same numbers)."""
    rng = np.random.default_rng(seed)
    dtype = np.float16 if elem == F16 else np.float32
    w = {
        "W1": rng.normal(0, 0.3, (4, 3, 3, 3)), "B1": rng.normal(0, 0.1, 4),
        "W2": rng.normal(0, 0.3, (6, 4, 3, 3)), "B2": rng.normal(0, 0.1, 6),
    }
    inits = [numpy_helper.from_array(v.astype(np.float16).astype(dtype), k) for k, v in w.items()]
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], name="conv1", kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "W2", "B2"], ["c2"], name="conv2", kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
    ]
    return make_model(nodes, [vi("x", [batch, 3, 16, 16], elem)], [vi("r2", None, elem)], inits)


# ----------------------------------------------------------------------------- float16 models


@pytest.fixture(scope="module")
def fp16_pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("fp16")
    images = write_images(d / "images", 3)
    return save(small_net(F16), d / "net16.onnx"), save(small_net(), d / "net32.onnx"), images


def test_float16_features_match_float32_twin(fp16_pair, tmp_path):
    m16, m32, images = fp16_pair
    got = {}
    for m in (m16, m32):
        r = invoke("features", m, images[0], "--layer", 2, "--out", tmp_path / m.stem, "--format", "json")
        assert r.exit_code == 0, r.stderr
        got[m] = {c["channel"]: c for c in json.loads(r.stdout)["channels"]}
    for c, row in got[m32].items():  # float16 activations: 3 significant digits
        assert got[m16][c]["max"] == pytest.approx(row["max"], rel=1e-2, abs=1e-2)
        assert got[m16][c]["mean"] == pytest.approx(row["mean"], rel=1e-2, abs=1e-2)


def test_float16_top_matches_float32_twin(fp16_pair, tmp_path):
    m16, m32, images = fp16_pair
    got = {}
    for m in (m16, m32):
        r = invoke("top", m, images[0].parent, "--layer", 1, "--channels", "all", "-k", 3, "--out", tmp_path / m.stem,
                   "--format", "json", "--quiet")
        assert r.exit_code == 0, r.stderr
        got[m] = json.loads(r.stdout)["channels"]
    for a, b in zip(got[m16], got[m32]):
        assert [e["activation"] for e in a["entries"]] == pytest.approx([e["activation"] for e in b["entries"]], rel=1e-2, abs=1e-2)


@pytest.mark.parametrize("mode", ["backprop", "deconvnet"])
def test_float16_projection_matches_float32_twin(fp16_pair, tmp_path, mode):
    m16, m32, images = fp16_pair
    arrays = {}
    for m in (m16, m32):
        out_dir = tmp_path / m.stem
        r = invoke("project", m, images[1], "--layer", 2, "--channel", "all", "--mode", mode, "--save-npy",
                   "--out", out_dir, "--format", "json")
        assert r.exit_code == 0, r.stderr
        arrays[m] = [np.load(row["files"]["npy"]) for row in json.loads(r.stdout)["results"]]
    for a, b in zip(arrays[m16], arrays[m32]):
        assert a.dtype == np.float32 and a.shape == b.shape == (1, 3, 16, 16)
        scale = np.abs(b).max()
        if scale > 0:
            assert np.abs(a - b).max() <= 0.05 * scale


# ----------------------------------------------------------------------------- onnxruntime failures


def pinned_batch_model() -> onnx.ModelProto:
    """x [N,3,16,16] → Reshape to [1,3,16,16] → conv: the symbolic batch is pinned to 1 inside."""
    m = small_net()
    g = m.graph
    g.initializer.append(init("pin", [4], np.int64, [1, 3, 16, 16]))
    g.node.insert(0, helper.make_node("Reshape", ["x", "pin"], ["xr"], name="pin_batch"))
    g.node[1].input[0] = "xr"
    return m


def test_top_falls_back_to_one_image_at_a_time(tmp_path):
    model = save(pinned_batch_model(), tmp_path / "pinned.onnx")
    images = write_images(tmp_path / "images", 5)
    results = {}
    for bs in (4, 1):
        r = invoke("top", model, images[0].parent, "--layer", 2, "--channels", "all", "-k", 2, "--batch-size", bs,
                   "--out", tmp_path / f"out{bs}", "--format", "json", "--quiet")
        assert r.exit_code == 0, r.stderr
        results[bs] = [(ch["channel"], ch["entries"]) for ch in json.loads(r.stdout)["channels"]]
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        if bs == 4:  # one warning, however many runs fell back (scan and projection)
            assert len(lines) == 1 and lines[0].startswith("Warning:") and "one at a time" in lines[0], r.stderr
        else:
            assert lines == []
    assert results[4] == results[1]


def weight_as_input_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    node = helper.make_node("Conv", ["x", "W"], ["y"], name="conv")
    m = make_model([node], [vi("x", [1, 3, 16, 16]), vi("W", [4, 3, 3, 3])], [out()])
    del rng
    return m


@pytest.mark.parametrize("command", ["features", "top", "project"])
def test_conv_weight_fed_as_graph_input(tmp_path, command):
    model = save(weight_as_input_model(), tmp_path / "winput.onnx")
    images = write_images(tmp_path / "images", 2)
    src = images[0] if command != "top" else images[0].parent
    extra = ["--channel", "0"] if command == "project" else []
    line = assert_one_line_error(invoke(command, model, src, "--layer", 1, "--input-name", "x", "--out", tmp_path / "o", *extra), 1)
    assert "'W'" in line
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_onnxruntime_allocation_failure_is_one_line(tmp_path):
    """A run onnxruntime cannot allocate (an 8 GB conv output under a 4 GiB address-space limit,
    the estimate overridden with --max-memory): one `Error:` line, no log line, no traceback."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.1, (2048, 3, 3, 3)).astype(np.float32), "W")
    node = helper.make_node("Conv", ["x", "W"], ["y"], name="conv", pads=[1, 1, 1, 1])
    model = save(make_model([node], [vi("x", [1, 3, "H", "W_"])], [out()], [w]), tmp_path / "wide.onnx")
    image = write_images(tmp_path / "images", 1)[0]

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    p = subprocess.run([*CNN, "features", str(model), str(image), "--layer", "1", "--size", "1000x1000",
                        "--max-memory", "1T", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, preexec_fn=limit, timeout=300)
    assert p.returncode == 1, p.stderr
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), p.stderr
    assert "allocate" in lines[0] or "memory" in lines[0]
    assert "\x1b" not in p.stderr


def failing_reshape_model() -> onnx.ModelProto:
    """conv output [1,4,14,14] reshaped by a runtime-computed shape that cannot fit: shape
    inference lets it through, onnxruntime fails in the run (and logs an [E:onnxruntime] line)."""
    m = small_net(batch=1)
    g = m.graph
    g.node.append(helper.make_node("Shape", ["r1"], ["s"], name="shape"))
    g.node.append(helper.make_node("Add", ["s", "bump"], ["s2"], name="bump_shape"))
    g.node.append(helper.make_node("Reshape", ["r1", "s2"], ["bad"], name="bad_reshape"))
    g.node.append(helper.make_node("Conv", ["bad", "W3"], ["y3"], name="conv3", kernel_shape=[1, 1]))
    g.initializer.extend([init("bump", [4], np.int64, [0, 0, 1, 0]), init("W3", [2, 4, 1, 1], value=np.ones(8))])
    del g.output[:]
    g.output.append(vi("y3", None))
    return m


def test_onnxruntime_run_failure_prints_no_log_line(tmp_path):
    model = save(failing_reshape_model(), tmp_path / "bad.onnx")
    image = write_images(tmp_path / "images", 1)[0]
    p = subprocess.run([*CNN, "features", str(model), str(image), "--layer", "3", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, p.stderr
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: onnxruntime failed"), p.stderr
    assert "\x1b" not in p.stderr and "[E:onnxruntime" not in p.stderr and "onnxruntime_src" not in p.stderr


def test_memory_error_is_one_line(tmp_path, monkeypatch):
    import cnncli.api.features as features

    def no_memory(*a, **k):
        raise MemoryError

    monkeypatch.setattr(features, "channel_stats", no_memory)
    image = write_images(tmp_path / "images", 1)[0]
    line = assert_one_line_error(invoke("features", save(small_net(), tmp_path / "m.onnx"), image, "--layer", 1,
                                        "--out", tmp_path / "o"), 1)
    assert "memory" in line


# ----------------------------------------------------------------------------- Ctrl-C


def _interrupt_when_files_appear(cmd: list[str], out_dir: Path, signum: int = signal.SIGINT) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if out_dir.exists() and any(not f.name.startswith(".") for f in out_dir.iterdir()):
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"finished before the interrupt: {proc.stderr.read()}"
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


@pytest.mark.parametrize("command", ["top", "project"])
def test_ctrl_c_exits_130_with_one_line_and_no_partial_file(tmp_path, command):
    out_dir = tmp_path / "out"
    images = REPO / "sample_models" / "images"
    if command == "top":
        args = ["top", str(ZFNET_MINI), str(images), "--layer", "2", "--channels", "all", "-k", "4"]
    else:
        args = ["project", str(ZFNET_MINI), str(images / "star.png"), "--layer", "2", "--channel", "all", "--batch-size", "1"]
    done = _interrupt_when_files_appear([*CNN, *args, "--out", str(out_dir)], out_dir)
    assert done.returncode == 130, done.stderr
    assert done.stderr == "Interrupted.\n"
    assert done.stdout == ""
    left = list(out_dir.iterdir())
    assert all(not f.name.startswith(".") for f in left), left  # no temporary (half-written) file
    for f in left:  # what is there is whole
        with Image.open(f) as im:
            im.load()


# ----------------------------------------------------------------------------- memory estimate


def test_estimate_by_hand():
    """x [1,3,8,8] → conv 4x3x3x3 → y [1,4,6,6], float32: input 768 B, y 576 B, weights 432 B."""
    from cnncli.frontend.graph import analyse
    from cnncli.engine.memory import run_estimate

    node = helper.make_node("Conv", ["x", "W"], ["y"], name="conv")
    g = analyse(make_model([node], [vi("x", [1, 3, 8, 8])], [out()], [init("W", [4, 3, 3, 3])]))
    assert run_estimate(g, "x", "y") == 768 + 576 + 432
    assert run_estimate(g, "x", "y", rows=3) == 3 * (768 + 576) + 432
    # reverse: per row the projection (192 floats) and twice the largest signal (144 floats), float32
    assert run_estimate(g, "x", "y", rows=1, reverse_rows=2) == 768 + 576 + 432 + 2 * 4 * (192 + 2 * 144) + 432


@pytest.mark.parametrize("text, value", [("64G", 64 << 30), ("512M", 512 << 20), ("1.5T", int(1.5 * (1 << 40))),
                                         ("2000", 2000), ("16GiB", 16 << 30), ("8gb", 8 << 30)])
def test_parse_size(text, value):
    from cnncli.engine.memory import parse_size

    assert parse_size(text) == value


def symbolic_size_model() -> onnx.ModelProto:
    node = helper.make_node("Conv", ["x", "W"], ["y"], name="conv")
    return make_model([node], [vi("x", [1, 3, "H", "W_"])], [out()], [init("W", [4, 3, 3, 3], value=np.ones(108))])


@pytest.mark.parametrize("command", ["features", "project", "top"])
def test_huge_size_refused_before_any_work(tmp_path, command):
    model = save(symbolic_size_model(), tmp_path / "sym.onnx")
    image = write_images(tmp_path / "images", 1)[0]
    src = image.parent if command == "top" else image
    line = assert_one_line_error(invoke(command, model, src, "--layer", 1, "--size", "100000x100000", "--out", tmp_path / "o"), 1)
    # input 3·10^10 floats = 112 GiB, conv output 4·(99998)^2 floats = 149 GiB: about 261 GiB at least
    assert "3x100000x100000" in line and "--max-memory" in line
    value, unit = line.split("needs about ")[1].split(" ")[:2]
    needed = float(value) * {"GiB": 1, "TiB": 1024}[unit]
    assert 250 <= needed < 4096
    assert not (tmp_path / "o").exists()


def test_max_memory_limit(tmp_path):
    model = save(symbolic_size_model(), tmp_path / "sym.onnx")
    image = write_images(tmp_path / "images", 1)[0]
    line = assert_one_line_error(invoke("features", model, image, "--layer", 1, "--size", "64x64", "--max-memory", "10K",
                                        "--out", tmp_path / "o"), 1)
    assert "10 KiB" in line
    r = invoke("features", model, image, "--layer", 1, "--size", "64x64", "--max-memory", "1G", "--out", tmp_path / "o")
    assert r.exit_code == 0, r.stderr
    assert_one_line_error(invoke("features", model, image, "--layer", 1, "--max-memory", "lots", "--out", tmp_path / "o"), 2)


# ----------------------------------------------------------------------------- images


def test_16_bit_png_keeps_its_range(tmp_path):
    from cnncli.imaging.preprocess import read_image

    a = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    p = tmp_path / "g16.png"
    Image.fromarray(a).save(p)
    with Image.open(p) as im:
        assert im.mode.startswith("I")  # a 16-bit grey image, not converted on the way
    got = read_image(p, 1, (32, 32))[:, :, 0]
    assert np.abs(got.astype(int) - np.round(a / 257.0).astype(int)).max() <= 1
    rgb = read_image(p, 3, (32, 32))
    assert np.array_equal(rgb[:, :, 0], rgb[:, :, 2]) and np.abs(rgb[:, :, 1].astype(int) - got).max() <= 1


def test_float_image_in_unit_range(tmp_path):
    from cnncli.imaging.preprocess import read_image

    a = np.linspace(0, 1, 16 * 16).reshape(16, 16).astype(np.float32)
    p = tmp_path / "f.tiff"
    Image.fromarray(a, "F").save(p)
    got = read_image(p, 1, (16, 16))[:, :, 0]
    assert np.abs(got.astype(int) - np.round(a * 255).astype(int)).max() <= 1


def test_exif_orientation_is_applied(tmp_path):
    """A phone photo stored sideways (EXIF orientation 6: rotate 90° clockwise to show): dark
    top half as stored becomes the dark right half as shown."""
    from cnncli.imaging.preprocess import read_image

    a = np.full((40, 60, 3), 255, np.uint8)
    a[:20] = 0  # stored: top dark
    exif = Image.Exif()
    exif[0x0112] = 6
    p = tmp_path / "phone.jpg"
    Image.fromarray(a).save(p, exif=exif, quality=95)
    got = read_image(p, 3, (60, 40)).astype(float)  # shown 60 high, 40 wide
    assert got[:, :20].mean() > 200 and got[:, 20:].mean() < 50


@pytest.mark.parametrize("mode", ["P", "LA", "CMYK", "1", "I;16"])
def test_other_modes_read_without_warnings(tmp_path, mode):
    from cnncli.imaging.preprocess import read_image

    p = tmp_path / f"img.{'tiff' if mode == 'CMYK' else 'png'}"
    im = Image.new(mode, (8, 8))
    if mode == "P":
        im.info["transparency"] = 0
        im.save(p, transparency=0)
    else:
        im.save(p)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = read_image(p, 3, (8, 8))
    assert got.shape == (8, 8, 3) and got.dtype == np.uint8


# ----------------------------------------------------------------------------- image lists


def test_each_image_listed_once(tmp_path):
    from cnncli.imaging.sources import iter_image_paths

    folder = tmp_path / "photos"
    sub = folder / "sub"
    sub.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(sub / "a.png")
    Image.new("RGB", (8, 8)).save(sub / "b.png")
    (folder / "alias.png").symlink_to(sub / "a.png")
    (sub / "up").symlink_to(folder)  # a loop
    (sub / "up2").symlink_to(folder)  # and another: glob.glob would walk 2^40 paths
    listing = tmp_path / "list.txt"
    listing.write_text(f"{sub / 'a.png'}\n{sub / 'a.png'}\n{sub}/../sub/a.png\n{sub / 'b.png'}\n")
    for spec in (str(folder), f"{folder}/**/*.png", str(listing)):
        got = list(iter_image_paths(spec))
        assert sorted(os.path.realpath(p) for p in got) == sorted(os.path.realpath(sub / n) for n in ("a.png", "b.png")), spec


def test_top_entries_name_each_image_once(tmp_path):
    image = write_images(tmp_path / "images", 1)[0]
    listing = tmp_path / "list.txt"
    (tmp_path / "link.png").symlink_to(image)
    listing.write_text(f"{image}\n{image}\n{tmp_path / 'link.png'}\n")
    r = invoke("top", save(small_net(), tmp_path / "m.onnx"), listing, "--layer", 1, "--channels", "all", "-k", 3,
               "--out", tmp_path / "o", "--format", "json", "--quiet")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["scanned"] == 1
    assert all(len(ch["entries"]) == 1 for ch in doc["channels"])


def test_all_unreadable_list_names_them_and_why(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    listing = tmp_path / "list.txt"
    listing.write_text(f"{tmp_path / 'missing.png'}\n{tmp_path / 'broken.png'}\n{tmp_path}\n{tmp_path / 'x.png'}\n{tmp_path / 'y.png'}\n")
    line = assert_one_line_error(invoke("top", save(small_net(), tmp_path / "m.onnx"), listing, "--layer", 1,
                                        "--out", tmp_path / "o", "--quiet"), 1)
    assert "5 skipped" in line
    assert f"'{tmp_path / 'missing.png'}' (no such file)" in line
    assert f"'{tmp_path / 'broken.png'}' (" in line
    assert "(it is a directory)" in line and "and 2 more" in line


# ----------------------------------------------------------------------------- options and models


@pytest.mark.parametrize("option, value", [("--mean", "nan"), ("--std", "inf"), ("--std", "0"), ("--mean", "0.5,-inf,0.5"),
                                           ("--std", "0.2,0,0.2")])
def test_non_finite_or_zero_normalisation_rejected(tmp_path, option, value):
    image = write_images(tmp_path / "images", 1)[0]
    line = assert_one_line_error(invoke("features", save(small_net(), tmp_path / "m.onnx"), image, "--layer", 1,
                                        option, value, "--out", tmp_path / "o"), 2)
    assert option in line


def test_python_api_rejects_non_finite_mean():
    from cnncli.errors import BadArgument
    from cnncli.imaging.preprocess import make_preprocess

    with pytest.raises(BadArgument):
        make_preprocess(3, None, mean=[float("nan")])


def test_a_channels_last_model_takes_images_as_its_channels_first_twin(tmp_path):
    """A Keras-shaped input [1, H, W, 3] (tf2onnx's Transpose to channels-first after it) takes
    images: `cnn features`, `cnn project` and `cnn top` give what the same conv with a
    channels-first input gives, projections channels-first; its receptive fields are found."""
    w = init("W", [4, 3, 3, 3], value=np.linspace(-1, 1, 108))
    nhwc = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
            helper.make_node("Conv", ["t", "W"], ["c"], name="conv"), helper.make_node("Relu", ["c"], ["y"])]
    nchw = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv"), helper.make_node("Relu", ["c"], ["y"])]
    models = {"nhwc": save(make_model(nhwc, [vi("x", [1, 32, 32, 3])], [out()], [w]), tmp_path / "nhwc.onnx"),
              "nchw": save(make_model(nchw, [vi("x", [1, 3, 32, 32])], [out()], [w]), tmp_path / "nchw.onnx")}
    images = write_images(tmp_path / "images", 3, size=32)
    got = {}
    for kind, model in models.items():
        o = tmp_path / kind
        feats = json.loads(invoke("features", model, images[0], "--layer", 1, "--out", o / "f", "--format", "json").stdout)
        proj = json.loads(invoke("project", model, images[0], "--layer", 1, "--channel", "0,3", "--save-npy",
                                 "--out", o / "p", "--format", "json").stdout)
        top = json.loads(invoke("top", model, images[0].parent, "--layer", 1, "--channels", "all", "-k", 2,
                                "--out", o / "t", "--format", "json").stdout)
        got[kind] = (feats["channels"], [np.load(r["files"]["npy"]) for r in proj["results"]],
                     [(r["channel"], r["best"], [(e["image"], e["location"], e["box"]) for e in r["entries"]])
                      for r in top["channels"]])
    (f1, p1, t1), (f2, p2, t2) = got["nhwc"], got["nchw"]
    assert f1 == f2 and t1 == t2
    assert all(a.shape == (1, 3, 32, 32) and np.array_equal(a, b) for a, b in zip(p1, p2))


def two_input_model() -> onnx.ModelProto:
    """x [1,3,16,16] → conv1 → y; y + mask (a second input with a symbolic size) → conv2."""
    nodes = [helper.make_node("Conv", ["x", "W"], ["y"], name="conv1"),
             helper.make_node("Add", ["y", "mask"], ["z"], name="add"),
             helper.make_node("Conv", ["z", "W2"], ["q"], name="conv2", kernel_shape=[1, 1])]
    inits = [init("W", [4, 3, 3, 3], value=np.linspace(-1, 1, 108)), init("W2", [2, 4, 1, 1], value=np.ones(8))]
    return make_model(nodes, [vi("x", [1, 3, 16, 16]), vi("mask", [1, 4, "H", "W"])], [out("q")], inits)


@pytest.mark.parametrize("command", ["features", "project", "top"])
def test_input_the_layer_does_not_need(tmp_path, command):
    model = save(two_input_model(), tmp_path / "two.onnx")
    image = write_images(tmp_path / "images", 1)[0]
    src = image.parent if command == "top" else image
    extra = ["--channel", "0"] if command != "features" else []
    r = invoke(command, model, src, "--layer", 1, "--input-name", "x", "--out", tmp_path / "o", *extra)
    assert r.exit_code == 0, r.stderr
    line = assert_one_line_error(invoke(command, model, src, "--layer", 2, "--input-name", "x", "--out", tmp_path / "o2", *extra), 1)
    assert "'mask'" in line and "--input-shape" not in line


@pytest.mark.parametrize("command", ["features", "top", "project"])
def test_errors_suggest_only_the_commands_own_options(tmp_path, command):
    model = save(make_model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [1, 3, 16, 16])], [out()]), tmp_path / "relu.onnx")
    image = write_images(tmp_path / "images", 1)[0]
    src = image.parent if command == "top" else image
    line = assert_one_line_error(invoke(command, model, src, "--layer", 1, "--out", tmp_path / "o"), 2)
    assert "no Conv layers" in line
    assert ("--tensor" in line) == (command == "project")


@pytest.mark.parametrize("command", ["features", "top", "project"])
def test_model_that_does_not_fit_its_input_names_no_missing_option(tmp_path, command):
    """conv2 takes 5 channels where conv1 gives 4: the model's own shapes do not fit, exit 1,
    without sending the user to --input-shape (which these commands do not have)."""
    nodes = [helper.make_node("Conv", ["x", "W"], ["y"], name="c1"), helper.make_node("Conv", ["y", "W2"], ["z"], name="c2")]
    model = save(make_model(nodes, [vi("x", [1, 3, 8, 8])], [out("z")], [init("W", [4, 3, 3, 3]), init("W2", [2, 5, 3, 3])]),
                 tmp_path / "bad.onnx")
    image = write_images(tmp_path / "images", 1)[0]
    src = image.parent if command == "top" else image
    line = assert_one_line_error(invoke(command, model, src, "--layer", 2, "--out", tmp_path / "o"), 1)
    assert "'c2'" in line and "--input-shape" not in line


def test_connectivity_without_conv(tmp_path):
    model = save(make_model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [1, 3, 8, 8])], [out()]), tmp_path / "relu.onnx")
    for fmt in ("table", "json"):
        line = assert_one_line_error(invoke("connectivity", model, "--format", fmt), 1)
        assert "no Conv layer" in line and "Relu" in line


# ----------------------------------------------------------------------------- stderr, one line per message


def test_decompression_bomb_warning_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # warns above 1000 pixels, fails above 2000
    p = tmp_path / "big.png"
    Image.new("RGB", (40, 40)).save(p)  # 1600 pixels
    r = invoke("features", save(small_net(), tmp_path / "m.onnx"), p, "--layer", 1, "--out", tmp_path / "o", "--format", "json")
    assert r.exit_code == 0, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Warning: ") and "big.png" in lines[0] and "1600 pixels" in lines[0], r.stderr


def test_numpy_runtime_warnings_are_one_line_each(tmp_path):
    """Activations that overflow to inf: the montage's scaling divides inf by inf."""
    m = small_net()
    g = m.graph
    g.initializer.append(init("huge", [], np.float32, 3e38))
    g.node.insert(0, helper.make_node("Mul", ["x", "huge"], ["xh"], name="scale_up"))
    g.node[1].input[0] = "xh"
    image = write_images(tmp_path / "images", 1)[0]
    r = invoke("features", save(m, tmp_path / "inf.onnx"), image, "--layer", 1, "--out", tmp_path / "o", "--format", "csv",
               "--preset", "raw")
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines, "expected a warning"
    assert all(line.startswith(("Warning: ", "Error: ")) for line in lines), r.stderr
    assert len(lines) == len(set(lines))
    assert "RuntimeWarning" not in r.stderr and ".py:" not in r.stderr


def test_routed_warnings_hook():
    from cnncli.render.routed_warnings import routed_warnings

    runner = CliRunner()
    with runner.isolation() as (_, _, err):
        with routed_warnings():
            for _ in range(3):
                warnings.warn("same thing", UserWarning)
            np.float32(3e38) * np.float32(10)
        text = err.getvalue().decode()
    lines = text.splitlines()
    assert lines[0] == "Warning: same thing"
    assert len(lines) == 2 and lines[1].startswith("Warning: numerical problem") and "overflow" in lines[1]
