"""`cnn features` (a layer's activation maps for one image, strongest first, with per-channel
statistics) and `cnn filters` (a conv layer's kernels as a montage).

The model is a tiny random-weight graph built here:

    x [N,3,32,32] → conv1 5x5 (8) → relu1 (r1) → pool 2x2/2 → conv2 3x3 pad 1 (6) → relu2 (r2)

conv2's channel 4 has zero weights and bias −1 (dead: all zeros) and channel 5 zero weights and
bias 0.5 (0.5 everywhere), so their statistics and montage tiles are known exactly. Everything else
is checked against an onnxruntime session of the model itself and numpy on the weights.
"""

from __future__ import annotations

import csv
import io
import json
import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from cnncli.cli import cli
from helpers import ZFNET_PAPER, assert_one_line_error

DEAD, CONST = 4, 5
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def _f32(name, arr) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name)


def weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = {
        "W1": rng.normal(0, 0.2, (8, 3, 5, 5)), "B1": rng.normal(0, 0.1, 8),
        "W2": rng.normal(0, 0.3, (6, 8, 3, 3)), "B2": rng.normal(0, 0.1, 6),
    }
    w["W2"][DEAD], w["B2"][DEAD] = 0.0, -1.0
    w["W2"][CONST], w["B2"][CONST] = 0.0, 0.5
    return {k: v.astype(np.float32) for k, v in w.items()}


def tiny_model(outputs=("r2",)) -> onnx.ModelProto:
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], name="conv1", kernel_shape=[5, 5]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "W2", "B2"], ["c2"], name="conv2", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        [_f32(k, v) for k, v in weights().items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="cnncli-tests")
    model.ir_version = 8
    return model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("feat")
    model = d / "tiny.onnx"
    onnx.save(tiny_model(), str(model))
    session = ort.InferenceSession(tiny_model(("r1", "r2")).SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(7)
    image = d / "photo.png"
    yy, xx = np.mgrid[0:45, 0:60]
    pixels = np.clip(rng.integers(0, 256, (45, 60, 3)) * 0.4 + 150 * np.sin(xx / 4.0 + yy / 7.0)[:, :, None], 0, 255)
    Image.fromarray(pixels.astype(np.uint8)).save(image)
    return {"dir": d, "model": str(model), "image": image, "session": session}


def pixels_of(path) -> np.ndarray:
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB").resize((32, 32), Image.Resampling.BILINEAR), dtype=np.uint8)
    return arr.astype(np.float32) / np.float32(255)


def reference(setup, tensor: str, preset: str = "unit") -> np.ndarray:
    x = pixels_of(setup["image"])
    if preset == "imagenet":
        x = (x - IMAGENET_MEAN) / IMAGENET_STD
    return setup["session"].run([tensor], {"x": np.ascontiguousarray(x.transpose(2, 0, 1)[None])})[0][0]


def invoke(*args, input=None):
    return CliRunner().invoke(cli, [*map(str, args)], input=input)


def features_json(setup, layer, *extra, out=None):
    r = invoke("features", setup["model"], setup["image"], "--layer", layer, "--format", "json",
               "--out", out or setup["dir"] / "out", *extra)
    assert r.exit_code == 0, (r.stderr, r.exception)
    return json.loads(r.stdout)


# ----------------------------------------------------------------------------- features


@pytest.mark.parametrize("layer,tensor,preset", [(2, "r2", "unit"), (1, "r1", "unit"), (2, "r2", None)])
def test_feature_statistics(setup, layer, tensor, preset):
    """max, mean and zero fraction per channel equal numpy's on the target; rows strongest first.
    Without --preset a 3-channel model gets ImageNet normalisation."""
    doc = features_json(setup, layer, *(("--preset", preset) if preset else ()))
    act = reference(setup, tensor, preset or "imagenet").astype(np.float64)
    assert doc["tensor"] == tensor and doc["shape"] == list(act.shape)
    rows = doc["channels"]
    assert sorted(r["channel"] for r in rows) == list(range(act.shape[0]))
    maxima = [r["max"] for r in rows]
    assert maxima == sorted(maxima, reverse=True)
    for r in rows:
        a = act[r["channel"]]
        assert r["max"] == pytest.approx(a.max(), rel=1e-5, abs=1e-7)
        assert r["mean"] == pytest.approx(a.mean(), rel=1e-5, abs=1e-7)
        assert r["zero_fraction"] == pytest.approx((a == 0).mean(), abs=1e-12)
    if layer == 2:
        by_channel = {r["channel"]: r for r in rows}
        assert (by_channel[DEAD]["max"], by_channel[DEAD]["mean"], by_channel[DEAD]["zero_fraction"]) == (0.0, 0.0, 1.0)
        assert by_channel[CONST]["max"] == pytest.approx(0.5) and by_channel[CONST]["zero_fraction"] == 0.0
        # expected order, by hand: by max descending, ties by channel number
        expected = sorted(range(6), key=lambda c: (-float(act[c].max()), c))
        assert [r["channel"] for r in rows] == expected


LABEL_H = 17  # each tile's label strip (cnncli.imaging.montage: 12-pixel text + 5)
LEGEND_H = 21  # the filters' legend under the montage (cnncli.imaging.montage.scale_note)


def test_feature_montage_layout(setup, tmp_path):
    """6 maps: 3 columns of 64-pixel tiles, each under a 17-pixel label, 4-pixel gaps, 2 rows
    (200x166); tiles in row order; the constant channel's tile is white, the dead channel's black,
    each map scaled to its own peak; the labels (channel and max) are drawn above the tiles."""
    from cnncli.api.features import FeatureRow, montage, tile_label

    doc = features_json(setup, 2, "--preset", "unit", out=tmp_path)
    order = [r["channel"] for r in doc["channels"]]
    path = doc["montage"]
    assert path.startswith(str(tmp_path))
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (3 * 64 + 2 * 4, 2 * (LABEL_H + 64) + 4)
        img = np.asarray(im.convert("RGB"))
    act = reference(setup, "r2")
    cell = LABEL_H + 64 + 4

    def tile(i):
        r, c = divmod(i, 3)
        return img[r * cell + LABEL_H:r * cell + LABEL_H + 64, c * 68:c * 68 + 64]

    def label(i):
        r, c = divmod(i, 3)
        return img[r * cell:r * cell + LABEL_H, c * 68:c * 68 + 64]

    assert (tile(order.index(CONST)) == 255).all()
    assert (tile(order.index(DEAD)) == 0).all()
    for i, c in enumerate(order):
        assert (label(i) > 150).any(), f"no label over channel {c}'s tile"  # light text on the dark strip
        if c in (DEAD, CONST):
            continue
        t = tile(i)[:, :, 0].astype(np.float64)
        # 14x14 map enlarged to 64x64 (nearest): the brightest map position is white, zeros black
        assert t.max() == 255
        assert (t == 0).any() == (act[c] == 0).any()
        y, x = np.unravel_index(np.argmax(act[c]), act[c].shape)
        assert t[int((y + 0.5) * 64 / 14), int((x + 0.5) * 64 / 14)] == 255
    assert (img[LABEL_H + 64:cell, :] == 40).all()  # the gap between rows
    # the same montage without labels: no strips, the same tiles
    rows = [FeatureRow(**r) for r in doc["channels"]]
    bare = montage(act, rows, labels=False)
    assert bare.shape == (2 * 64 + 4, 200, 3)
    for i in range(6):
        r, c = divmod(i, 3)
        assert (bare[r * 68:r * 68 + 64, c * 68:c * 68 + 64] == tile(i)).all()
    assert [tile_label(r) for r in rows] == [f"c{r.channel} {r.max:.3g}" for r in rows]


def test_feature_montage_layer1_is_square(setup, tmp_path):
    doc = features_json(setup, 1, "--preset", "unit", out=tmp_path)
    with Image.open(doc["montage"]) as im:
        assert im.size == (3 * 64 + 8, 3 * (LABEL_H + 64) + 8)  # 8 maps: 3x3 cells


@pytest.mark.parametrize("fmt", ["table", "csv", "jsonl", "markdown"])
def test_feature_formats(setup, tmp_path, fmt):
    r = invoke("features", setup["model"], setup["image"], "--layer", 2, "--preset", "unit", "--format", fmt,
               "--out", tmp_path)
    assert r.exit_code == 0, r.stderr
    act = reference(setup, "r2")
    order = sorted(range(6), key=lambda c: (-float(act[c].max()), c))
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(r.stdout)))
        assert [int(row["channel"]) for row in rows] == order
        for row in rows:
            assert float(row["max"]) == pytest.approx(act[int(row["channel"])].max(), rel=1e-5)
            assert float(row["zero_fraction"]) == pytest.approx((act[int(row["channel"])] == 0).mean())
    elif fmt == "jsonl":
        rows = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
        assert [row["channel"] for row in rows] == order
    else:
        assert "zeros" in r.stdout and "max" in r.stdout
        assert len([line for line in r.stdout.splitlines() if line.strip()]) >= 6
    [montage] = tmp_path.glob("tiny_photo-*_layer2_features.png")  # the image's part ends in a hash
    assert montage.is_file()


def test_features_and_filters_of_a_model_on_stdin(setup, tmp_path):
    data = open(setup["model"], "rb").read()
    r = invoke("features", "-", setup["image"], "--layer", 2, "--preset", "unit", "--format", "json", "--out", tmp_path,
               input=data)
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["channels"] == features_json(setup, 2, "--preset", "unit")["channels"]
    r = invoke("filters", "-", "--layer", 1, "--format", "json", "--out", tmp_path, input=data)
    assert r.exit_code == 0, r.stderr
    names = [re.sub(r"-[0-9a-f]{8}_", "-H_", p.name) for p in sorted(tmp_path.iterdir())]
    assert names == ["stdin-H_layer1_filters.png", "stdin_photo-H_layer2_features.png"]


@pytest.mark.parametrize("layer", [0, 3, -1])
def test_features_bad_layer(setup, tmp_path, layer):
    msg = assert_one_line_error(invoke("features", setup["model"], setup["image"], "--layer", layer, "--out", tmp_path / "o"), 2)
    assert "--layer" in msg
    assert not (tmp_path / "o").exists()


def test_features_unreadable_image(setup, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    msg = assert_one_line_error(invoke("features", setup["model"], bad, "--layer", 1, "--out", tmp_path / "o"), 1)
    assert "bad.png" in msg


# ----------------------------------------------------------------------------- filters


def filters_json(model, layer, out):
    r = invoke("filters", model, "--layer", layer, "--format", "json", "--out", out)
    assert r.exit_code == 0, (r.stderr, r.exception)
    return json.loads(r.stdout)


def test_first_layer_filters_in_rgb(setup, tmp_path):
    doc = filters_json(setup["model"], 1, tmp_path)
    w = weights()["W1"].astype(np.float64)
    assert doc["rgb"] is True and doc["weight_shape"] == [8, 3, 5, 5] and doc["node"] == "conv1"
    assert [r["channel"] for r in doc["filters"]] == list(range(8))
    np.testing.assert_allclose([r["norm"] for r in doc["filters"]], np.linalg.norm(w.reshape(8, -1), axis=1), rtol=1e-6)
    assert all(r["shown_input"] is None for r in doc["filters"])
    # montage: 3x3 cells of 40 pixels (5x5 kernels enlarged 8x) under 17-pixel labels, 6-pixel white
    # gaps, a 21-pixel legend under it; each filter in colour, 0 at mid-grey, all on one scale: the
    # largest magnitude of any filter
    with Image.open(doc["montage"]) as im:
        assert im.format == "PNG" and im.size[1] == 3 * (LABEL_H + 40) + 12 + LEGEND_H
        img = np.asarray(im.convert("RGB")).astype(int)
    grid_w = 3 * 40 + 12  # the grid; the canvas is wider where the legend's line needs it, white there
    assert img.shape[1] >= grid_w and (img[:-LEGEND_H, grid_w:] == 255).all()
    peak = np.abs(w).max()
    for c in range(8):
        r, col = divmod(c, 3)
        y0, x0 = r * (LABEL_H + 40 + 6) + LABEL_H, col * 46
        f = w[c].transpose(1, 2, 0)
        want = np.round((0.5 + 0.5 * f / peak) * 255)
        got = img[y0:y0 + 40, x0:x0 + 40][4::8, 4::8]
        assert np.abs(got - want).max() <= 1, f"filter {c}"
        assert (img[y0 - LABEL_H:y0, x0:x0 + 40] < 100).any(), f"no label over filter {c}"  # dark text on white
    assert (img[LABEL_H + 40:LABEL_H + 46, :] == 255).all()  # the white separator between rows
    assert (img[-LEGEND_H:] < 100).any()  # the legend: what the grey levels mean


def test_deeper_filters_show_the_strongest_input_slice(setup, tmp_path):
    doc = filters_json(setup["model"], 2, tmp_path)
    w = weights()["W2"].astype(np.float64)
    assert doc["rgb"] is False and doc["weight_shape"] == [6, 8, 3, 3]
    energy = (w ** 2).sum(axis=(2, 3))  # [out, in]
    rows = {r["channel"]: r for r in doc["filters"]}
    assert sorted(rows) == list(range(6))
    for c in range(6):
        assert rows[c]["norm"] == pytest.approx(np.sqrt((w[c] ** 2).sum()), rel=1e-6)
        if c not in (DEAD, CONST):  # the zero filters have no strongest slice
            assert rows[c]["shown_input"] == int(np.argmax(energy[c]))
            assert energy[c, rows[c]["shown_input"]] == energy[c].max()
    with Image.open(doc["montage"]) as im:
        assert im.size[1] == 2 * (LABEL_H + 40) + 6 + LEGEND_H  # 3x3 kernels enlarged to 40, 6 filters
        img = np.asarray(im.convert("RGB")).astype(int)
    assert img.shape[1] >= 3 * 40 + 12 and (img[:-LEGEND_H, 3 * 40 + 12:] == 255).all()  # (the legend's width)
    shown = [w[c, int(np.argmax(energy[c]))] for c in range(6)]
    peak = max(np.abs(s).max() for s in shown)  # one scale for every filter
    for c in range(6):
        r, col = divmod(c, 3)
        y0 = r * (LABEL_H + 46) + LABEL_H
        tile = img[y0:y0 + 40, col * 46:col * 46 + 40]
        assert (tile[:, :, 0] == tile[:, :, 1]).all() and (tile[:, :, 1] == tile[:, :, 2]).all()  # grey
        if c in (DEAD, CONST):
            assert (np.abs(tile - 128) <= 1).all()  # an all-zero filter is flat mid-grey
        else:
            want = np.round((0.5 + 0.5 * shown[c] / peak) * 255)
            assert np.abs(tile[[6, 20, 33]][:, [6, 20, 33], 0] - want).max() <= 1, f"filter {c}"


def test_deeper_layer_with_three_inputs_is_grey(tmp_path):
    """'RGB' is for the first layer (it looks at the image); a deeper conv that happens to read
    three channels still shows its strongest input slice in grey."""
    rng = np.random.default_rng(3)
    nodes = [
        helper.make_node("Conv", ["x", "W1"], ["c1"], name="conv1", kernel_shape=[3, 3]),
        helper.make_node("Conv", ["c1", "W2"], ["c2"], name="conv2", kernel_shape=[3, 3]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 16, 16])],
        [helper.make_tensor_value_info("c2", TensorProto.FLOAT, None)],
        [_f32("W1", rng.normal(size=(3, 1, 3, 3))), _f32("W2", rng.normal(size=(4, 3, 3, 3)))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "grey_in.onnx"
    onnx.save(model, str(path))
    first = filters_json(path, 1, tmp_path)
    assert first["rgb"] is False and [r["shown_input"] for r in first["filters"]] == [0, 0, 0]
    doc = filters_json(path, 2, tmp_path)
    w2 = numpy_helper.to_array(graph.initializer[1]).astype(np.float64)
    assert doc["rgb"] is False
    assert [r["shown_input"] for r in doc["filters"]] == [int(np.argmax((f ** 2).sum(axis=(1, 2)))) for f in w2]


def test_filters_of_constant_of_shape_weights(tmp_path):
    """The ZF paper sample stores its weights as ConstantOfShape nodes (every weight 0.01)."""
    doc = filters_json(str(ZFNET_PAPER), 1, tmp_path)
    assert doc["weight_shape"] == [96, 3, 7, 7] and doc["rgb"] is True
    assert len(doc["filters"]) == 96
    np.testing.assert_allclose([r["norm"] for r in doc["filters"]], np.sqrt(3 * 7 * 7) * 0.01, rtol=1e-6)
    with Image.open(doc["montage"]) as im:
        # 96 filters: 10 columns of 7·8 = 56 pixels, 6-pixel gaps, labels, the legend
        assert im.size == (10 * 56 + 9 * 6, 10 * (LABEL_H + 56) + 9 * 6 + LEGEND_H)


@pytest.mark.parametrize("fmt", ["table", "csv", "jsonl", "markdown"])
def test_filters_formats(setup, tmp_path, fmt):
    r = invoke("filters", setup["model"], "--layer", 2, "--format", fmt, "--out", tmp_path)
    assert r.exit_code == 0, r.stderr
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(r.stdout)))
        assert [int(row["channel"]) for row in rows] == list(range(6))


@pytest.mark.parametrize("layer", [0, 3, -2])
def test_filters_bad_layer(setup, tmp_path, layer):
    msg = assert_one_line_error(invoke("filters", setup["model"], "--layer", layer, "--out", tmp_path / "o"), 2)
    assert "--layer" in msg
    assert not (tmp_path / "o").exists()


def test_filters_bad_layer_on_zfnet(tmp_path):
    assert_one_line_error(invoke("filters", str(ZFNET_PAPER), "--layer", 6, "--out", tmp_path / "o"), 2)


def test_filters_unwritable_out(setup, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_one_line_error(invoke("filters", setup["model"], "--layer", 1, "--out", blocker / "o"), 1)
