"""Totals on real architectures: the model-zoo graphs that ship inside the onnx package, and the
Zeiler & Fergus (2013) network in sample_models/zfnet_paper.onnx.

The zoo numbers are the reference totals for these graphs at batch 1 (MACs of Conv, Gemm and
MatMul; params = every learnable weight counted once, BatchNorm statistics excluded).
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cnncli.cli import cli
from helpers import LIGHT_DIR, ZFNET_PAPER

ZOO = {
    # name: (macs, params)
    "resnet50": (4_089_184_256, 25_557_032),
    "vgg19": (19_632_062_464, 143_667_240),
    "zfnet512": (1_481_727_008, 87_250_536),
    "bvlc_alexnet": (654_560_384, 60_965_224),
    "squeezenet": (349_151_936, 1_235_496),
    "densenet121": (2_834_161_664, 8_062_504),
    "inception_v1": (1_431_556_352, 6_998_552),
    "shufflenet": (124_664_528, 1_393_320),
}


def _stats_json(*args: str) -> dict:
    result = CliRunner().invoke(cli, ["stats", *args, "--format", "json"])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_model_totals(name):
    path = LIGHT_DIR / f"light_{name}.onnx"
    assert path.exists(), f"the onnx package should ship {path}"
    macs, params = ZOO[name]
    totals = _stats_json(str(path))["totals"]
    assert totals["macs"] == macs
    assert totals["params"] == params
    assert totals["flops"] == 2 * totals["macs"] + totals["flops_other"]
    assert totals["incomplete"] is False
    assert totals["unknown_ops"] == []


# ZF net (Fig. 3 of the paper), layer by layer at batch 1:
#   conv1 96x3x7x7 /2 pad 1: 224 -> 110 ; pool 3/2 ceil -> 55
#   conv2 256x96x5x5 /2:      55 -> 26  ; pool 3/2 ceil -> 13
#   conv3 384x256x3x3 pad 1, conv4 384x384x3x3 pad 1, conv5 256x384x3x3 pad 1: 13x13
#   pool5 3/2 -> 6 ; fc6 9216->4096 ; fc7 4096->4096 ; fc8 4096->1000
ZF_CONVS = [
    # name, Cout, Cin, k, Hout
    ("conv1", 96, 3, 7, 110),
    ("conv2", 256, 96, 5, 26),
    ("conv3", 384, 256, 3, 13),
    ("conv4", 384, 384, 3, 13),
    ("conv5", 256, 384, 3, 13),
]
ZF_FCS = [("fc6", 9216, 4096), ("fc7", 4096, 4096), ("fc8", 4096, 1000)]


def test_zfnet_paper_totals():
    data = _stats_json(str(ZFNET_PAPER))
    t = data["totals"]
    conv_params = (96 * 3 * 7 * 7 + 96) + (256 * 96 * 5 * 5 + 256) + (384 * 256 * 3 * 3 + 384) \
        + (384 * 384 * 3 * 3 + 384) + (256 * 384 * 3 * 3 + 256)
    fc_params = (9216 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 1000 + 1000)
    assert conv_params + fc_params == 62_357_608
    assert t["params"] == 62_357_608
    conv_macs = sum(cout * h * h * cin * k * k for _, cout, cin, k, h in ZF_CONVS)
    fc_macs = 9216 * 4096 + 4096 * 4096 + 4096 * 1000
    assert conv_macs + fc_macs == 1_168_032_896
    assert t["macs"] == 1_168_032_896
    assert t["buffers"] == 0
    assert t["convs"] == 5
    assert t["weight_bytes"] == {"float32": 62_357_608 * 4}
    assert t["largest_activation"] == {"name": "conv1", "bytes": 96 * 110 * 110 * 4}
    assert data["inputs"] == [{"name": "image", "shape": [1, 3, 224, 224], "dtype": "float32"}]


def test_zfnet_paper_conv_rows():
    layers = _stats_json(str(ZFNET_PAPER))["layers"]
    convs = [r for r in layers if r["op"] == "Conv"]
    assert [r["name"] for r in convs] == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert [r["index"] for r in convs] == [1, 2, 3, 4, 5]
    # every other row carries no conv number
    assert all(r["index"] is None for r in layers if r["op"] != "Conv")
    for r, (name, cout, cin, k, h) in zip(convs, ZF_CONVS):
        assert r["macs"] == cout * h * h * cin * k * k, name
        assert r["params"] == cout * cin * k * k + cout, name
        assert r["cpr"] == h * h, name  # 12100, 676, 169, 169, 169
        assert r["output_shape"] == [1, cout, h, h], name
        assert r["kernel"] == [k, k], name
    assert [r["cpr"] for r in convs] == [12100, 676, 169, 169, 169]
    # receptive fields: 7; +2·2 (pool) = 11; +4·4 = 27; +2·8 (pool) = 43; +2·16 = 75, 107, 139
    assert [r["rf"] for r in convs] == [[7, 7], [27, 27], [75, 75], [107, 107], [139, 139]]
    assert [r["rf_stride"] for r in convs] == [[2, 2], [8, 8], [16, 16], [16, 16], [16, 16]]
    by_name = {r["name"]: r for r in layers}
    assert by_name["pool1"]["output_shape"] == [1, 96, 55, 55]
    assert by_name["pool1"]["rf"] == [11, 11]
    assert by_name["pool5"]["output_shape"] == [1, 256, 6, 6]
    for name, cin, cout in ZF_FCS:
        assert by_name[name]["macs"] == cin * cout, name
        assert by_name[name]["params"] == cin * cout + cout, name
        assert by_name[name]["cpr"] == 1, name  # N at batch 1


def test_zfnet_paper_batch_scales_macs_only():
    t1 = _stats_json(str(ZFNET_PAPER))["totals"]
    t8 = _stats_json(str(ZFNET_PAPER), "--batch", "8")["totals"]
    assert t8["macs"] == 8 * 1_168_032_896
    assert t8["params"] == 62_357_608
    assert t8["flops_other"] == 8 * t1["flops_other"]


def test_zfnet_paper_conv_numbering_in_table():
    result = CliRunner().invoke(cli, ["stats", str(ZFNET_PAPER), "--format", "csv"])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    numbered = [line.split(",")[:3] for line in lines[1:] if line.split(",")[0]]
    assert numbered == [[str(i), f"conv{i}", "Conv"] for i in range(1, 6)]
