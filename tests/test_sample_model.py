"""sample_models/zfnet_mini.onnx: the trained Zeiler & Fergus-layout sample network.

Needs only numpy, onnx, onnxruntime and Pillow (no torch): the held-out images are regenerated
with sample_models/synthetic.py, from a seed the training never used.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"
MODEL = SAMPLES / "zfnet_mini.onnx"
CARD = SAMPLES / "README.md"
sys.path.insert(0, str(SAMPLES))
import synthetic  # noqa: E402

OPS = [
    "Conv", "Relu", "MaxPool", "LRN",
    "Conv", "Relu", "MaxPool", "LRN",
    "Conv", "Relu", "Conv", "Relu", "Conv", "Relu", "MaxPool",
    "Flatten", "Gemm", "Relu", "Gemm",
]
NAMES = [
    "conv1", "relu1", "pool1", "norm1",
    "conv2", "relu2", "pool2", "norm2",
    "conv3", "relu3", "conv4", "relu4", "conv5", "relu5", "pool5",
    "flatten", "fc6", "relu6", "fc7",
]
TEST_SEED, TEST_N = 2024, 200  # train.py trains on seed 0 and reports held-out on seed 1


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    return onnx.load(str(MODEL))


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _documented_accuracy() -> float:
    m = re.search(r"test-set accuracy[^\n]*?(\d\.\d+)", CARD.read_text(encoding="utf-8"), re.I)
    assert m, "model card must state the test-set accuracy"
    return float(m.group(1))


def test_file_small_and_valid(model):
    assert MODEL.stat().st_size < 5_000_000
    onnx.checker.check_model(model)
    assert any(o.domain in ("", "ai.onnx") and o.version == 17 for o in model.opset_import)


def test_layout(model):
    nodes = list(model.graph.node)
    assert [n.op_type for n in nodes] == OPS
    assert [n.name for n in nodes] == NAMES
    by = {n.name: _attrs(n) for n in nodes}
    assert by["conv1"]["kernel_shape"] == [7, 7] and by["conv1"]["strides"] == [2, 2]
    assert by["conv2"]["kernel_shape"] == [5, 5] and by["conv2"]["strides"] == [2, 2]
    for c in ("conv3", "conv4", "conv5"):
        assert by[c]["kernel_shape"] == [3, 3] and by[c]["strides"] == [1, 1]
    for p in ("pool1", "pool2", "pool5"):
        assert by[p]["kernel_shape"] == [3, 3] and by[p]["strides"] == [2, 2]
    for n in ("norm1", "norm2"):
        assert by[n]["size"] == 5
    assert by["fc6"]["transB"] == 1 and by["fc7"]["transB"] == 1
    inits = {t.name: t for t in model.graph.initializer}
    assert 32 <= inits["conv1.weight"].dims[0] <= 64
    assert all(t.data_type == onnx.TensorProto.FLOAT for t in inits.values())


def test_io_and_metadata(model):
    (inp,) = model.graph.input
    dims = inp.type.tensor_type.shape.dim
    assert inp.name == "image"
    assert dims[0].dim_param  # symbolic batch
    assert dims[1].dim_value == 3 and dims[2].dim_value >= 96 and dims[3].dim_value >= 96
    assert dims[2].dim_value == dims[3].dim_value == synthetic.SIZE
    (out,) = model.graph.output
    assert out.name == "logits"
    assert out.type.tensor_type.shape.dim[1].dim_value == len(synthetic.CLASSES) == 10
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["cnncli.preprocess"] == "imagenet"
    assert meta["cnncli.labels"].split(",") == list(synthetic.CLASSES)


def test_generator_is_deterministic():
    a, ya = synthetic.make_set(3, seed=TEST_SEED, start=5)
    b, yb = synthetic.make_set(3, seed=TEST_SEED, start=5)
    assert np.array_equal(a, b) and np.array_equal(ya, yb)
    c, _ = synthetic.make_set(3, seed=TEST_SEED + 1, start=5)
    assert not np.array_equal(a, c)


def test_heldout_accuracy():
    documented = _documented_accuracy()
    assert documented >= 0.90
    x, y = synthetic.make_set(TEST_N, seed=TEST_SEED)
    sess = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    logits = sess.run(["logits"], {"image": synthetic.preprocess(x)})[0]
    acc = float((logits.argmax(1) == y).mean())
    assert acc >= 0.90
    assert acc >= documented - 0.03, f"accuracy {acc:.3f} vs documented {documented:.3f}"


def test_sample_images_open():
    images = sorted((SAMPLES / "images").iterdir())
    photos = [p for p in images if p.suffix == ".jpg"]
    generated = [p for p in images if p.suffix == ".png"]
    assert 4 <= len(photos) <= 6 and 4 <= len(generated) <= 6
    for p in images:
        with Image.open(p) as im:
            im.load()
            assert max(im.size) <= 320 or p.suffix == ".png"
    for p in generated:
        assert p.stem in synthetic.CLASSES
