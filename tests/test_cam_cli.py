"""`cnn cam` through the command line and the Python API: the JSON document, the files (read back),
exit codes, batching over images and classes, and where the maps lie on the bundled net.

References for the numbers are in tests/test_cam_reference.py (pytorch-grad-cam's maps); here the
CLI's files are checked against the API's arrays, a batched run against one image at a time, and
the predicted class's map against the shape it was drawn from (issue 17: the map lies on the shape).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw

import cnncli
from cnncli.cli import cli
from helpers import REPO

MODEL = str(REPO / "sample_models" / "zfnet_mini.onnx")
IMAGES = REPO / "sample_models" / "images"
STAR = str(IMAGES / "star.png")


def _cli(*args: str):
    return CliRunner().invoke(cli, ["cam", *args], catch_exceptions=False)


def test_json_document_and_files_read_back(tmp_path):
    out = tmp_path / "o"
    r = _cli(MODEL, STAR, "--layer", "5", "--top", "2", "--out", str(out), "--save-npy", "--guided", "--format", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert [k for k in doc][:5] == ["model", "input", "layer", "tensor", "method"]
    assert (doc["layer"], doc["tensor"], doc["method"]) == (5, "relu5", "gradcam")
    assert [row["class"] for row in doc["results"]][0] == 3 and doc["results"][0]["label"] == "star"
    api = cnncli.cam(MODEL, STAR, layer=5, top=2, guided=True)
    for row, m in zip(doc["results"], api):
        assert row["class"] == m.unit and row["score"] == pytest.approx(m.score, rel=1e-6)
        files = row["files"]
        assert set(files) == {"png", "figure", "npy", "guided"}
        raw = np.load(files["npy"])
        assert raw.dtype == np.float32 and raw.shape == (7, 7)  # the layer's own resolution
        np.testing.assert_allclose(raw, m.map, rtol=1e-6, atol=1e-7)
        assert (raw >= 0).all()
        with Image.open(files["png"]) as im:
            assert im.size == (112, 112) and im.mode == "RGB"
        with Image.open(files["figure"]) as im:
            assert im.width > 3 * 112
        with Image.open(files["guided"]) as im:
            assert im.size == (112, 112)
    assert sorted(p.name for p in out.iterdir()) == sorted(Path(f).name for row in doc["results"] for f in row["files"].values())


@pytest.mark.parametrize("args, flag", [
    (["--layer", "6"], "--layer"),
    (["--layer", "no_such_tensor"], "--layer"),
    (["--layer", "logits"], "--layer"),  # not a 4-D map
    (["--class", "10"], "--class"),
    (["--top", "11"], "--top"),
    (["--tensor", "relu5"], "--tensor"),  # no --channel
    (["--tensor", "relu5", "--channel", "128"], "--channel"),
    (["--class", "1", "--top", "2"], "--top"),
    (["--output", "nope"], "--output"),
    (["--method", "nope"], "--method"),
])
def test_bad_usage_exits_2(tmp_path, args, flag):
    r = _cli(MODEL, STAR, "--out", str(tmp_path / "o"), *args)
    assert r.exit_code == 2, r.output
    assert flag in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()


def test_no_readable_image_exits_1(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "broken.png").write_bytes(b"not a png")
    r = _cli(MODEL, str(folder), "--out", str(tmp_path / "o"))
    assert r.exit_code == 1
    assert r.stderr.count("Error:") == 1 and "Traceback" not in r.stderr


def test_folder_batched_equals_one_image_at_a_time(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("star.png", "circle.png", "zigzag.png"):
        shutil.copy(IMAGES / name, folder / name)
    (folder / "broken.png").write_bytes(b"not a png")
    with pytest.warns(cnncli.CnnWarning, match="skipped 1 unreadable"):
        res = cnncli.cam(MODEL, folder, layer=4, top=2, batch_size=2, method="gradcam++")
    assert [Path(m.image).name for m in res] == ["circle.png"] * 2 + ["star.png"] * 2 + ["zigzag.png"] * 2
    for m in res:
        one = cnncli.cam(MODEL, m.image, layer=4, classes=m.unit, method="gradcam++")[0]
        np.testing.assert_allclose(m.map, one.map, rtol=1e-5, atol=1e-6 * float(one.map.max()))
        assert m.score == pytest.approx(one.score, rel=1e-5)
    r = _cli(MODEL, str(folder), "--layer", "4", "--class", "0,3", "--out", str(tmp_path / "o"), "--no-figure",
             "--format", "csv")
    assert r.exit_code == 0
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("image,class,label,score,files") and len(lines) == 1 + 3 * 2


def test_tensor_channel_score_and_scorecam_count(tmp_path):
    """Score a channel of an inner tensor summed over space: the gradient method and Score-CAM
    agree on where it is, and Score-CAM runs one forward pass per channel of the layer."""
    res = cnncli.cam(MODEL, STAR, layer=2, tensor="relu4", channel=7)
    assert res[0].unit == 7 and res[0].label is None and res.meta["score"] == "relu4"
    sc = cnncli.cam(MODEL, STAR, layer=2, tensor="relu4", channel=7, method="scorecam", batch_size=50)
    assert sc.meta["forward_runs"] == 1 + 128  # layer 2 has 128 channels
    assert sc[0].score == pytest.approx(res[0].score, rel=1e-5)


# ----------------------------------------------------------------------------- where the maps lie


def _shape(kind: str, cx: float, cy: float, r: float = 24):
    """A flat shape on a plain background, 112x112, and its mask."""
    im, mask = Image.new("RGB", (112, 112), (40, 60, 110)), Image.new("L", (112, 112), 0)
    for draw, colour in ((ImageDraw.Draw(im), (230, 200, 40)), (ImageDraw.Draw(mask), 255)):
        if kind == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
        elif kind == "star":
            a = np.arange(10) * math.pi / 5 - math.pi / 2
            rad = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
            draw.polygon([(cx + q * math.cos(t), cy + q * math.sin(t)) for q, t in zip(rad, a)], fill=colour)
        elif kind == "square":
            draw.rectangle([cx - 0.7 * r, cy - 0.7 * r, cx + 0.7 * r, cy + 0.7 * r], fill=colour)
        else:  # cross
            w = 0.3 * r
            draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=colour)
            draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=colour)
    return np.asarray(im), np.asarray(mask) > 0


@pytest.mark.parametrize("kind", ["circle", "star", "square", "cross"])
@pytest.mark.parametrize("centre", [(30, 30), (82, 34), (32, 80), (80, 80)])
def test_predicted_class_map_lies_on_an_off_centre_shape(kind, centre):
    pixels, mask = _shape(kind, *centre)
    m = cnncli.cam(MODEL, pixels, layer=5)[0]
    assert m.label == kind
    up = m.upsampled()
    y, x = np.unravel_index(up.argmax(), up.shape)
    ys, xs = np.nonzero(mask)
    assert np.hypot(ys - y, xs - x).min() <= 8  # the peak on the shape, to half a cell of layer 5 (16 px)
    assert (up * mask).sum() / up.sum() >= 2 * mask.mean()  # twice the map's share of a uniform one


def test_evaluate_figures_are_cam_metrics_on_the_upsampled_map():
    """--evaluate: each row's figures are cnncli.engine.cam_metrics.evaluate of the class's logit
    (scored here by onnxruntime on the whole model) on the map upsampled to the input (a 32x32
    model from the reference fixtures: ROAD's imputation takes seconds at 112x112)."""
    import onnxruntime as ort

    from cnncli.api.cam import METRICS
    from cnncli.engine.cam_metrics import evaluate

    small = Path(__file__).parent / "fixtures" / "cam" / "small_torchscript"
    d = np.load(f"{small}.npz")
    x = d["x"][:1]
    res = cnncli.cam(f"{small}.onnx", x, layer=2, top=2, evaluate=True)
    assert res.meta["tensor"] == str(d["layer_tensor"])  # layer 2 is conv2's ReLU
    sess = ort.InferenceSession(f"{small}.onnx", providers=["CPUExecutionProvider"])
    for row, m in zip(res.rows, res):
        want = evaluate(lambda b: sess.run(["logits"], {"x": b})[0][:, m.unit], x[0], m.upsampled())
        for key in METRICS:
            assert getattr(row, key) == pytest.approx(want[key], rel=1e-4, abs=1e-5), key
        assert m.metrics["deletion_auc"] == row.deletion_auc
    assert cnncli.cam(f"{small}.onnx", x, layer=2).rows[0].deletion_auc is None


def test_heat_map_colours_are_matplotlibs_jet():
    from matplotlib import colormaps

    from cnncli.api.cam_files import heat

    x = np.linspace(0, 1, 1001)[None]
    want = np.round(colormaps["jet"](x)[..., :3] * 255)
    assert np.abs(heat(x).astype(int) - want).max() <= 5  # (matplotlib's jet is a 256-entry table)


def test_the_default_layer_is_the_last_conv_with_a_map(tmp_path):
    """A classifier written as a 1x1 conv after global pooling (Keras' MobileNetV3) has a 1x1 map,
    where a CAM is one flat value: by default the CAM goes to the last conv whose map is larger."""
    from onnx import helper

    from helpers import init, make_model, out, save, vi

    nodes = [helper.make_node("Conv", ["x", "W1"], ["c1"], name="features", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("GlobalAveragePool", ["r1"], ["g"]),
             helper.make_node("Conv", ["g", "W2"], ["logits"], name="classifier"),
             helper.make_node("Flatten", ["logits"], ["y"])]
    inits = [init("W1", [4, 3, 3, 3], value=np.linspace(-1, 1, 108)),
             init("W2", [5, 4, 1, 1], value=np.linspace(-1, 1, 20))]
    model = save(make_model(nodes, [vi("x", [1, 3, 16, 16])], [out("y")], inits), tmp_path / "m.onnx")
    img = tmp_path / "i.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(img)
    r = _cli(str(model), str(img), "--out", str(tmp_path / "o"), "--format", "json", "--quiet")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["layer"] == 1 and doc["tensor"] == "r1"
    r = _cli(str(model), str(img), "--layer", "2", "--out", str(tmp_path / "o2"), "--format", "json", "--quiet")
    assert r.exit_code == 0 and json.loads(r.stdout)["layer"] == 2  # asked for, it is still given
