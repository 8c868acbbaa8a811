"""`cnn project` through the command line: inputs, preprocessing, targets, channels, modes, files.

Models are tiny graphs built here with ``onnx.helper`` (random weights, fixed seed) plus the ZF
paper sample; images are written with Pillow into tmp folders. Numbers the CLI reports are checked
independently: activations by running the model in onnxruntime with the target as an output,
preprocessing by projecting from the input tensor itself (``--tensor x``: its "activation" is the
preprocessed input), and one projection against the exact transpose of a single convolution.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from cnncli.cli import cli
from helpers import PNG_MAGIC, REPO, ZFNET_PAPER

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN = (103.939, 116.779, 123.68)
COLOUR = (200, 100, 50)  # the uniform test image, RGB


# ----------------------------------------------------------------------------- models


def _f32(name: str, arr) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name)


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "t", inputs, [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs], inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="cnncli-tests")
    model.ir_version = 8
    return model


def tiny_model(channels: int = 3, hw=(32, 32), seed: int = 0, logits: bool = False) -> onnx.ModelProto:
    """x [1,C,H,W] → conv1 3x3 (8) → relu1 → pool1 2x2 → conv2 3x3 (6) → relu2 [→ GAP → fc (5 logits)].

    ``hw`` may hold strings for symbolic dims. Layer 1's block output is r1, layer 2's is r2.
    """
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "W2", "B2"], ["c2"], name="conv2", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
    ]
    inits = [
        _f32("W1", rng.normal(size=(8, channels, 3, 3))),
        _f32("B1", rng.normal(size=8) * 0.1),
        _f32("W2", rng.normal(size=(6, 8, 3, 3)) * 0.3),
        _f32("B2", rng.normal(size=6) * 0.1),
    ]
    outputs = ["r2"]
    if logits:
        nodes += [
            helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
            helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
            helper.make_node("Gemm", ["flat", "W3", "B3"], ["logits"], name="fc", transB=1),
        ]
        inits += [_f32("W3", rng.normal(size=(5, 6))), _f32("B3", rng.normal(size=5))]
        outputs = ["logits"]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, *hw])
    return _model(nodes, [x], outputs, inits)


def linear_conv_model(seed: int = 3) -> onnx.ModelProto:
    """x [1,2,16,16] → one Conv 3x3 pad 1 with bias (3 channels), output y: a linear map."""
    rng = np.random.default_rng(seed)
    node = helper.make_node("Conv", ["x", "W", "B"], ["y"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 16, 16])
    return _model([node], [x], ["y"], [_f32("W", rng.normal(size=(3, 2, 3, 3))), _f32("B", rng.normal(size=3))])


def block_model() -> onnx.ModelProto:
    """conv1 → BatchNormalization → Mul by a per-channel constant → LeakyRelu (layer 1's block output: 'act1');
    conv2 whose output feeds two nodes (layer 2's block output: the conv's own output 'c2')."""
    rng = np.random.default_rng(5)
    nodes = [
        helper.make_node("Conv", ["x", "W1"], ["c1"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "g", "b", "m", "v"], ["bn1"], name="bn1"),
        helper.make_node("Mul", ["bn1", "scale"], ["mul1"], name="mul1"),
        helper.make_node("LeakyRelu", ["mul1"], ["act1"], name="act1", alpha=0.1),
        helper.make_node("Conv", ["act1", "W2"], ["c2"], name="conv2", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Sigmoid", ["c2"], ["s2"], name="sig2"),
        helper.make_node("Add", ["r2", "s2"], ["y"], name="add"),
    ]
    inits = [
        _f32("W1", rng.normal(size=(4, 3, 3, 3))),
        _f32("g", np.ones(4)), _f32("b", np.zeros(4)), _f32("m", np.zeros(4)), _f32("v", np.ones(4)),
        _f32("scale", np.full((1, 4, 1, 1), 2.0)),
        _f32("W2", rng.normal(size=(3, 4, 3, 3))),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])
    return _model(nodes, [x], ["y"], inits)


def two_input_model() -> onnx.ModelProto:
    """Inputs a and b [1,3,16,16], each through its own conv (conva: 4 channels, convb: 2)."""
    rng = np.random.default_rng(7)
    nodes = [
        helper.make_node("Conv", ["a", "Wa"], ["ca"], name="conva", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["b", "Wb"], ["cb"], name="convb", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    ]
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 16, 16]) for n in ("a", "b")]
    inits = [_f32("Wa", rng.normal(size=(4, 3, 3, 3))), _f32("Wb", rng.normal(size=(2, 3, 3, 3)))]
    return _model(nodes, ins, ["ca", "cb"], inits)


def initializers_as_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """The IR-3 layout: every initializer also listed as a graph input (onnxruntime warns about it)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for t in m.graph.initializer:
        m.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return m


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("models")
    built = {
        "tiny": tiny_model(),
        "grey": tiny_model(channels=1, seed=1),
        "rgba": tiny_model(channels=4, hw=(16, 16), seed=2),
        "sym": tiny_model(hw=("H", "W"), seed=4),
        "logits": tiny_model(logits=True, seed=6),
        "linear": linear_conv_model(),
        "block": block_model(),
        "two": two_input_model(),
        "ir3": initializers_as_inputs(tiny_model()),
    }
    paths = {}
    for name, model in built.items():
        paths[name] = str(d / f"{name}.onnx")
        onnx.save(model, paths[name])
    return paths


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, str]:
    """Uniform COLOUR in every mode (exact through bilinear resizing), plus a random RGB JPEG."""
    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(11)
    paths = {}
    rgb = Image.new("RGB", (40, 30), COLOUR)
    rgb.save(d / "rgb.png")
    paths["rgb"] = str(d / "rgb.png")
    Image.new("L", (40, 30), 90).save(d / "grey.png")
    paths["grey"] = str(d / "grey.png")
    Image.new("RGBA", (40, 30), (*COLOUR, 77)).save(d / "rgba.png")
    paths["rgba"] = str(d / "rgba.png")
    pal = Image.new("P", (40, 30), 1)
    pal.putpalette([0, 0, 0, *COLOUR] + [0] * (3 * 254))
    pal.save(d / "pal.gif")
    paths["palette"] = str(d / "pal.gif")
    rgb.save(d / "rgb.bmp")
    paths["bmp"] = str(d / "rgb.bmp")
    noise = Image.fromarray((rng.random((48, 64, 3)) * 255).astype(np.uint8))
    noise.save(d / "noise.jpg", quality=95)
    paths["jpeg"] = str(d / "noise.jpg")
    np.save(d / "x32.npy", rng.normal(size=(1, 3, 32, 32)).astype(np.float32))
    paths["npy32"] = str(d / "x32.npy")
    np.save(d / "x16.npy", rng.normal(size=(1, 3, 16, 16)).astype(np.float32))
    paths["npy16"] = str(d / "x16.npy")
    np.save(d / "lin.npy", rng.normal(size=(1, 2, 16, 16)).astype(np.float32))
    paths["npy_linear"] = str(d / "lin.npy")
    return paths


# ----------------------------------------------------------------------------- helpers


def invoke(*args):
    return CliRunner().invoke(cli, ["project", *map(str, args)])


def run_json(*args) -> dict:
    """A successful `--format json` run: stdout is exactly one JSON object, stderr is empty."""
    result = invoke(*args, "--format", "json")
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.stderr!r} {result.exception!r}"
    assert result.stderr == "", result.stderr
    doc = json.loads(result.stdout)  # fails on anything but one JSON document
    assert isinstance(doc, dict)
    return doc


def by_channel(doc) -> dict[int, dict]:
    return {r["channel"]: r for r in doc["results"]}


def assert_png(path: str, size=None, mode=None) -> Image.Image:
    p = Path(path)
    assert p.is_file(), path
    assert p.read_bytes()[:8] == PNG_MAGIC
    im = Image.open(p)
    im.load()
    assert im.format == "PNG"
    if size is not None:
        assert im.size == size, (im.size, size)  # (W, H)
    if mode is not None:
        assert im.mode == mode
    return im


def forward(model_path: str, x: np.ndarray, tensor: str, input_name: str = "x") -> np.ndarray:
    """The target's value computed independently: the model with ``tensor`` as an extra output."""
    model = onnx.load(model_path)
    model.graph.output.append(helper.make_tensor_value_info(tensor, TensorProto.FLOAT, None))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run([tensor], {input_name: x})[0]


# ----------------------------------------------------------------------------- the ZF sample


def test_zfnet_jpeg_json_report_and_files(tmp_path, images):
    out = tmp_path / "out"
    doc = run_json(ZFNET_PAPER, images["jpeg"], "--layer", 1, "--channel", 5, "--out", out, "--save-npy")
    assert doc["model"] == str(ZFNET_PAPER)
    assert doc["input"] == images["jpeg"]
    assert doc["tensor"] == "conv1_relu"  # conv1's block output: through its ReLU
    assert doc["layer"] == 1
    assert (doc["mode"], doc["keep"], doc["provider"]) == ("deconvnet", "map", "cpu")
    assert doc["preprocess"] == {
        "preset": "imagenet", "range": "0-1", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
        "channel_order": "RGB", "size": [224, 224],
    }
    [row] = doc["results"]
    assert row["channel"] == 5
    y, x = row["location"]
    assert 0 <= y < 110 and 0 <= x < 110  # conv1's map is 110x110
    files = row["files"]
    assert set(files) == {"png", "figure", "npy"}
    base = Path(files["png"]).name[: -len(".png")]  # the input's part ends in a hash of which model and image
    assert Path(files["png"]).parent == out and re.fullmatch(r"zfnet_paper_noise-[0-9a-f]{8}_layer1_c5_deconvnet", base)
    assert Path(files["figure"]) == out / f"{base}_figure.png"
    assert Path(files["npy"]) == out / f"{base}.npy"
    assert_png(files["png"], size=(224, 224), mode="RGB")
    fig = assert_png(files["figure"])
    assert fig.size[0] > 2 * fig.size[1]  # input | projection | overlay side by side
    arr = np.load(files["npy"])
    assert arr.shape == (1, 3, 224, 224) and arr.dtype == np.float32
    assert sorted(p.name for p in out.iterdir()) == sorted(Path(f).name for f in files.values())


def test_default_out_dir_and_table(tmp_path, models, images, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(models["tiny"], images["rgb"], "--layer", 2, "--channel", "1")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    assert not result.stdout.lstrip().startswith("{")
    assert "channel" in result.stdout and "r2" in result.stdout  # the title names the target tensor
    names = sorted(p.name for p in (tmp_path / "cnn-out").iterdir())
    assert [re.sub(r"-[0-9a-f]{8}_", "-H_", n) for n in names] == ["tiny_rgb-H_layer2_c1_deconvnet.png",
                                                                  "tiny_rgb-H_layer2_c1_deconvnet_figure.png"]


# ----------------------------------------------------------------------------- channels and targets


def test_top_k_picks_the_strongest_channels(tmp_path, models, images):
    x = np.load(images["npy32"])
    act = forward(models["tiny"], x, "r1")[0]  # layer 1's block output, [8, 32, 32]
    strength = act.reshape(8, -1).max(axis=1)
    expected = list(np.argsort(-strength, kind="stable")[:2])
    doc = run_json(models["tiny"], images["npy32"], "--layer", 1, "--top", 2, "--out", tmp_path)
    assert doc["tensor"] == "r1"
    assert doc["preprocess"] == {"preset": "none (.npy used as is)"}
    assert [r["channel"] for r in doc["results"]] == expected
    for r in doc["results"]:
        c = r["channel"]
        assert r["max_activation"] == pytest.approx(float(strength[c]), rel=1e-5)
        assert r["location"] == [int(v) for v in np.unravel_index(np.argmax(act[c]), act[c].shape)]


def test_default_is_top_4(tmp_path, models, images):
    x = np.load(images["npy32"])
    strength = forward(models["tiny"], x, "r2")[0].reshape(6, -1).max(axis=1)
    doc = run_json(models["tiny"], images["npy32"], "--layer", 2, "--out", tmp_path)
    assert doc["tensor"] == "r2"
    assert [r["channel"] for r in doc["results"]] == list(np.argsort(-strength, kind="stable")[:4])


def test_channel_list_keeps_order_and_drops_repeats(tmp_path, models, images):
    doc = run_json(models["tiny"], images["npy32"], "--layer", 2, "--channel", "3,0,3", "--out", tmp_path)
    assert [r["channel"] for r in doc["results"]] == [3, 0]


def test_channel_all_gives_every_channel(tmp_path, models, images):
    doc = run_json(models["linear"], images["npy_linear"], "--tensor", "y", "--channel", "all", "--out", tmp_path)
    assert [r["channel"] for r in doc["results"]] == [0, 1, 2]  # y has 3 channels
    assert len(list(tmp_path.glob("*_figure.png"))) == 3


def test_layer_follows_the_conv_block(tmp_path, models, images):
    # conv1 → BN → Mul(const) → LeakyRelu: the block output is the activation
    doc = run_json(models["block"], images["npy16"], "--layer", 1, "--channel", 0, "--out", tmp_path)
    assert doc["tensor"] == "act1" and doc["layer"] == 1
    # conv2's output has two consumers: the block output is the conv's own output
    doc = run_json(models["block"], images["npy16"], "--layer", 2, "--channel", 0, "--out", tmp_path)
    assert doc["tensor"] == "c2" and doc["layer"] == 2


def test_tensor_target_2d_logits(tmp_path, models, images):
    x = np.load(images["npy32"])
    logits = forward(models["logits"], x, "logits")[0]
    doc = run_json(models["logits"], images["npy32"], "--tensor", "logits", "--top", 2, "--out", tmp_path, "--save-npy")
    assert doc["tensor"] == "logits" and doc["layer"] is None
    assert [r["channel"] for r in doc["results"]] == list(np.argsort(-logits, kind="stable")[:2])
    for r in doc["results"]:
        assert r["location"] is None
        assert r["max_activation"] == pytest.approx(float(logits[r["channel"]]), rel=1e-5)
        assert re.fullmatch(rf"logits_x32-[0-9a-f]{{8}}_logits_c{r['channel']}_deconvnet\.png", Path(r["files"]["png"]).name)
        proj = np.load(r["files"]["npy"])
        assert proj.shape == (1, 3, 32, 32) and np.abs(proj).max() > 0


def test_keep_max_on_2d_target_is_not_zero(tmp_path, models, images):
    doc = run_json(models["logits"], images["npy32"], "--tensor", "logits", "--channel", 0, "--keep", "max",
                   "--out", tmp_path, "--save-npy")
    proj = np.load(doc["results"][0]["files"]["npy"])
    assert np.abs(proj).max() > 0


def test_default_top_on_a_target_with_few_channels(tmp_path, models, images):
    doc = run_json(models["linear"], images["npy_linear"], "--tensor", "y", "--out", tmp_path)
    assert len(doc["results"]) == 3


def test_input_name_chooses_the_input(tmp_path, models, images):
    doc = run_json(models["two"], images["rgb"], "--input-name", "b", "--layer", 2, "--channel", 1, "--out", tmp_path)
    assert doc["tensor"] == "cb"
    assert_png(doc["results"][0]["files"]["png"], size=(16, 16), mode="RGB")


# ----------------------------------------------------------------------------- preprocessing


def _input_values(doc) -> list[float]:
    """With ``--tensor x`` on a uniform image, each channel's max activation is its preprocessed value."""
    return [r["max_activation"] for r in sorted(doc["results"], key=lambda r: r["channel"])]


def test_imagenet_default_for_3_channels(tmp_path, models, images):
    doc = run_json(models["tiny"], images["rgb"], "--tensor", "x", "--channel", "all", "--out", tmp_path)
    assert doc["preprocess"] == {
        "preset": "imagenet", "range": "0-1", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
        "channel_order": "RGB", "size": [32, 32],
    }
    expected = [(v / 255 - m) / s for v, m, s in zip(COLOUR, IMAGENET_MEAN, IMAGENET_STD)]
    assert _input_values(doc) == pytest.approx(expected, abs=1e-5)
    for r in doc["results"]:
        assert_png(r["files"]["png"], size=(32, 32), mode="RGB")  # resized from 40x30 to the model's 32x32


def test_caffe_preset_is_bgr_0_255(tmp_path, models, images):
    doc = run_json(models["tiny"], images["rgb"], "--tensor", "x", "--channel", "all", "--preset", "caffe", "--out", tmp_path)
    assert doc["preprocess"]["preset"] == "caffe"
    assert doc["preprocess"]["range"] == "0-255"
    assert doc["preprocess"]["channel_order"] == "BGR"
    assert doc["preprocess"]["mean"] == list(CAFFE_MEAN)
    assert doc["preprocess"]["std"] == [1.0, 1.0, 1.0]
    b, g, r = COLOUR[::-1]
    assert _input_values(doc) == pytest.approx([b - 103.939, g - 116.779, r - 123.68], abs=1e-4)


def test_raw_and_unit_presets(tmp_path, models, images):
    doc = run_json(models["tiny"], images["rgb"], "--tensor", "x", "--channel", "all", "--preset", "raw", "--out", tmp_path)
    assert doc["preprocess"]["preset"] == "raw" and doc["preprocess"]["range"] == "0-255"
    assert _input_values(doc) == pytest.approx(list(COLOUR))
    doc = run_json(models["tiny"], images["rgb"], "--tensor", "x", "--channel", "all", "--preset", "unit", "--out", tmp_path)
    assert doc["preprocess"]["preset"] == "unit" and doc["preprocess"]["range"] == "0-1"
    assert _input_values(doc) == pytest.approx([v / 255 for v in COLOUR], abs=1e-6)


def test_mean_std_bgr_overrides(tmp_path, models, images):
    doc = run_json(models["tiny"], images["rgb"], "--tensor", "x", "--channel", "all",
                   "--mean", "0.5", "--std", "0.25,0.5,1", "--bgr", "--out", tmp_path)
    p = doc["preprocess"]
    assert p["preset"] == "imagenet+custom"
    assert p["mean"] == [0.5, 0.5, 0.5] and p["std"] == [0.25, 0.5, 1.0] and p["channel_order"] == "BGR"
    b, g, r = COLOUR[::-1]
    assert _input_values(doc) == pytest.approx([(b / 255 - 0.5) / 0.25, (g / 255 - 0.5) / 0.5, r / 255 - 0.5], abs=1e-5)


def test_rgb_overrides_caffe_order(tmp_path, models, images):
    doc = run_json(models["tiny"], images["rgb"], "--tensor", "x", "--channel", 0, "--preset", "caffe", "--rgb", "--out", tmp_path)
    assert doc["preprocess"]["channel_order"] == "RGB"
    assert doc["results"][0]["max_activation"] == pytest.approx(COLOUR[0] - 103.939, abs=1e-4)


@pytest.mark.parametrize("kind, rgb", [
    ("grey", (90, 90, 90)),  # L → RGB copies the grey level
    ("rgba", COLOUR),  # alpha dropped
    ("palette", COLOUR),  # palette index 1 looked up
    ("bmp", COLOUR),
])
def test_image_modes_into_rgb_model(tmp_path, models, images, kind, rgb):
    doc = run_json(models["tiny"], images[kind], "--tensor", "x", "--channel", "all", "--preset", "raw", "--out", tmp_path)
    assert _input_values(doc) == pytest.approx(list(rgb))


def test_rgb_image_into_greyscale_model_unit_preset(tmp_path, models, images):
    doc = run_json(models["grey"], images["rgb"], "--tensor", "x", "--channel", 0, "--out", tmp_path, "--save-npy")
    assert doc["preprocess"] == {"preset": "unit", "range": "0-1", "mean": [0.0], "std": [1.0],
                                 "channel_order": "RGB", "size": [32, 32]}
    luma = (COLOUR[0] * 299 + COLOUR[1] * 587 + COLOUR[2] * 114) / 1000  # Pillow's L conversion
    assert doc["results"][0]["max_activation"] == pytest.approx(luma / 255, abs=1.5 / 255)
    row = doc["results"][0]
    assert_png(row["files"]["png"], size=(32, 32), mode="L")
    assert np.load(row["files"]["npy"]).shape == (1, 1, 32, 32)


def test_greyscale_image_into_4_channel_model(tmp_path, models, images):
    doc = run_json(models["rgba"], images["grey"], "--layer", 1, "--channel", 0, "--out", tmp_path, "--save-npy")
    assert doc["preprocess"]["preset"] == "unit"  # the default for anything but 3 channels
    assert doc["preprocess"]["mean"] == [0.0] * 4
    assert np.load(doc["results"][0]["files"]["npy"]).shape == (1, 4, 16, 16)


def test_size_for_symbolic_input(tmp_path, models, images):
    doc = run_json(models["sym"], images["jpeg"], "--layer", 2, "--channel", 0, "--size", "20x24", "--out", tmp_path, "--save-npy")
    assert doc["preprocess"]["size"] == [20, 24]
    row = doc["results"][0]
    assert_png(row["files"]["png"], size=(24, 20), mode="RGB")
    assert np.load(row["files"]["npy"]).shape == (1, 3, 20, 24)
    assert row["location"][0] < 10 and row["location"][1] < 12  # layer 2 is after a 2x2 pool


def test_npy_used_as_is_on_symbolic_model(tmp_path, models, images):
    x = np.load(images["npy32"])
    act = forward(models["sym"], x, "r1")[0]
    doc = run_json(models["sym"], images["npy32"], "--layer", 1, "--channel", 4, "--out", tmp_path)
    assert doc["results"][0]["max_activation"] == pytest.approx(float(act[4].max()), rel=1e-5)


# ----------------------------------------------------------------------------- projections and files


def test_backprop_of_one_conv_is_its_transpose(tmp_path, models, images):
    """keep max on a linear conv: the projection is the kept activation times that channel's filter,
    placed on the unit's 3x3 window (the exact adjoint); deconvnet agrees (no ReLU on the path)."""
    x = np.load(images["npy_linear"])
    y = forward(models["linear"], x, "y")[0]
    weights = numpy_helper.to_array(onnx.load(models["linear"]).graph.initializer[0])
    c = 1
    r, s = np.unravel_index(np.argmax(y[c]), y[c].shape)
    padded = np.zeros((2, 18, 18), np.float32)  # the input padded by 1 on each side
    padded[:, r:r + 3, s:s + 3] = y[c, r, s] * weights[c]
    expected = padded[:, 1:-1, 1:-1]
    for mode in ("backprop", "deconvnet"):
        doc = run_json(models["linear"], images["npy_linear"], "--tensor", "y", "--channel", c, "--keep", "max",
                       "--mode", mode, "--save-npy", "--out", tmp_path)
        row = doc["results"][0]
        assert row["location"] == [int(r), int(s)]
        assert row["max_activation"] == pytest.approx(float(y[c, r, s]), rel=1e-5)
        proj = np.load(row["files"]["npy"])
        assert proj.shape == (1, 2, 16, 16) and proj.dtype == np.float32
        np.testing.assert_allclose(proj[0], expected, rtol=1e-4, atol=1e-5)


def test_keep_max_differs_from_keep_map(tmp_path, models, images):
    projections = {}
    for keep in ("map", "max"):
        doc = run_json(models["tiny"], images["npy32"], "--layer", 2, "--channel", 2, "--keep", keep,
                       "--save-npy", "--out", tmp_path / keep)
        assert doc["keep"] == keep
        projections[keep] = np.load(doc["results"][0]["files"]["npy"])
    assert np.abs(projections["max"]).max() > 0
    assert not np.allclose(projections["map"], projections["max"])
    # only the strongest unit's receptive field (10x10 at layer 2) is non-zero with keep max
    assert np.count_nonzero(np.abs(projections["max"]).sum(axis=(0, 1))) <= 100 < np.count_nonzero(
        np.abs(projections["map"]).sum(axis=(0, 1)))


def test_modes_name_files_and_differ(tmp_path, models, images):
    projections = {}
    for mode in ("deconvnet", "backprop", "guided"):
        doc = run_json(models["tiny"], images["npy32"], "--layer", 2, "--channel", 0, "--mode", mode,
                       "--save-npy", "--out", tmp_path)
        assert doc["mode"] == mode
        files = doc["results"][0]["files"]
        assert re.fullmatch(rf"tiny_x32-[0-9a-f]{{8}}_layer2_c0_{mode}\.png", Path(files["png"]).name)
        projections[mode] = np.load(files["npy"])
    assert not np.allclose(projections["deconvnet"], projections["backprop"])
    assert not np.allclose(projections["guided"], projections["backprop"])


@pytest.mark.parametrize("norm", ["grey", "minmax", "percentile"])
def test_norms(tmp_path, models, images, norm):
    doc = run_json(models["tiny"], images["npy32"], "--layer", 1, "--channel", 3, "--keep", "max",
                   "--norm", norm, "--save-npy", "--out", tmp_path)
    files = doc["results"][0]["files"]
    proj = np.load(files["npy"])[0]  # [3, 32, 32]
    img = np.asarray(assert_png(files["png"], size=(32, 32), mode="RGB")).transpose(2, 0, 1)
    zero = proj == 0
    assert zero.sum() > 0.9 * zero.size  # keep max at layer 1: only a 3x3 window is non-zero
    if norm in ("grey", "percentile"):
        assert np.all(np.abs(img[zero].astype(int) - 128) <= 1)  # 0 is mid-grey
        assert img.min() == 0 or img.max() == 255  # the largest magnitude reaches an end
    else:
        assert img.min() == 0 and img.max() == 255


def test_export_reverse_graph_with_maxpool_passes_the_checker(tmp_path, models, images):
    path = tmp_path / "rev" / "reverse.onnx"
    path.parent.mkdir()
    run_json(models["tiny"], images["npy32"], "--layer", 2, "--channel", 0, "--mode", "guided",
             "--export-reverse", path, "--out", tmp_path / "out")
    reverse = onnx.load(str(path))
    onnx.checker.check_model(reverse, full_check=True)
    assert "seed" in [i.name for i in reverse.graph.input]
    assert [o.name for o in reverse.graph.output] == ["projection"]


def test_export_reverse_reproduces_the_projection(tmp_path, models, images):
    """For a single conv the reverse graph needs nothing but the seed: running it gives the saved npy."""
    path = tmp_path / "reverse.onnx"
    doc = run_json(models["linear"], images["npy_linear"], "--tensor", "y", "--channel", 2, "--keep", "max",
                   "--mode", "backprop", "--export-reverse", path, "--save-npy", "--out", tmp_path / "out")
    reverse = onnx.load(str(path))
    onnx.checker.check_model(reverse)
    assert [i.name for i in reverse.graph.input] == ["seed"]
    row = doc["results"][0]
    seed = np.zeros((1, 3, 16, 16), np.float32)
    seed[0, 2, row["location"][0], row["location"][1]] = row["max_activation"]
    sess = ort.InferenceSession(reverse.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(["projection"], {"seed": seed})[0], np.load(row["files"]["npy"]), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- streams


def _cnn(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnncli", "project", *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)


def test_onnxruntime_logs_stay_off_stderr_unless_verbose(tmp_path, models, images):
    """A model listing its initializers as inputs makes onnxruntime log a warning (from C++, on
    file descriptor 2: hence a real process)."""
    args = [models["ir3"], images["npy32"], "--layer", 1, "--channel", 0, "--format", "json"]
    quiet = _cnn(*args, "--out", tmp_path / "q")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    assert json.loads(quiet.stdout)["results"][0]["channel"] == 0
    loud = _cnn(*args, "--out", tmp_path / "v", "--verbose")
    assert loud.returncode == 0, loud.stderr
    assert "onnxruntime" in loud.stderr
    assert json.loads(loud.stdout)["results"][0]["channel"] == 0  # logs never reach stdout


def test_no_figure_writes_only_the_projections(tmp_path, models, images):
    doc = run_json(models["tiny"], images["npy32"], "--layer", 2, "--channel", "all", "--no-figure", "--out", tmp_path)
    assert [sorted(r["files"]) for r in doc["results"]] == [["png"]] * 6
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(Path(r["files"]["png"]).name for r in doc["results"])


def _activation_after_conv(tail: list, extra_inits: tuple = ()) -> onnx.ModelProto:
    """x [1,3,8,8] → conv → c, then ``tail`` (nodes reading c); its last node writes y."""
    w = numpy_helper.from_array(np.linspace(-1, 1, 4 * 3 * 9, dtype=np.float32).reshape(4, 3, 3, 3), "W")
    consts = [numpy_helper.from_array(np.asarray(v, np.float32), n) for n, v in extra_inits]
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]), *tail]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, *consts])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


THREE, SIXTH, ZERO, SIX = ("three", 3.0), ("sixth", 1 / 6), ("zero", 0.0), ("six", 6.0)
BLOCKS = {
    "silu": ([helper.make_node("Sigmoid", ["c"], ["s"]), helper.make_node("Mul", ["c", "s"], ["y"])], (), "y"),
    "silu, gate first": ([helper.make_node("Sigmoid", ["c"], ["s"]), helper.make_node("Mul", ["s", "c"], ["y"])], (), "y"),
    "hard swish op": ([helper.make_node("HardSwish", ["c"], ["y"])], (), "y"),
    "x·HardSigmoid(x)": ([helper.make_node("HardSigmoid", ["c"], ["s"]), helper.make_node("Mul", ["c", "s"], ["y"])],
                         (), "y"),
    "tf2onnx hard swish": ([helper.make_node("Add", ["c", "three"], ["a"]),
                            helper.make_node("Clip", ["a", "zero", "six"], ["r6"]),
                            helper.make_node("Mul", ["r6", "sixth"], ["g"]), helper.make_node("Mul", ["c", "g"], ["y"])],
                           (THREE, ZERO, SIX, SIXTH), "y"),
    "tanh": ([helper.make_node("Tanh", ["c"], ["y"])], (), "y"),
    # not activations of c: a gate computed from another tensor (squeeze-excite), a residual
    "gate of another tensor": ([helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Sigmoid", ["x"], ["s"]),
                                helper.make_node("Mul", ["c", "s"], ["y"])], (), "c"),
    "residual": ([helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Add", ["c", "r"], ["y"])], (), "c"),
    "gate through a second input": ([helper.make_node("Add", ["c", "x2"], ["a"]), helper.make_node("Sigmoid", ["a"], ["s"]),
                                     helper.make_node("Mul", ["c", "s"], ["y"])], (), "c"),
}


@pytest.mark.parametrize("case", list(BLOCKS))
def test_block_output_takes_one_activation(case):
    """Layer N's feature maps: the conv's block output includes one activation written as its own
    op or as a gated x·g(x) of the conv output (SiLU, hard swish in its three spellings), and
    nothing that mixes in another tensor."""
    from cnncli.engine.targets import block_output, conv_nodes
    from cnncli.frontend.graph import analyse

    tail, inits, want = BLOCKS[case]
    model = _activation_after_conv(tail, inits)
    if case == "gate through a second input":
        model.graph.input.append(helper.make_tensor_value_info("x2", TensorProto.FLOAT, [1, 4, 8, 8]))
    graph = analyse(model, batch=1)
    assert block_output(graph, conv_nodes(graph)[0]) == want
