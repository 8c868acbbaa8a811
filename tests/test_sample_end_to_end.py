"""`cnn top`, `cnn features`, `cnn filters` and `cnn project` end to end on the bundled trained
network and images (sample_models/), as a user would first run them."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from cnncli.cli import cli

SAMPLES = Path(__file__).resolve().parents[1] / "sample_models"
MODEL = str(SAMPLES / "zfnet_mini.onnx")
IMAGES = SAMPLES / "images"
PNG = b"\x89PNG\r\n\x1a\n"


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def is_png(path) -> bool:
    return Path(path).read_bytes()[:8] == PNG


def test_top_on_the_sample_images(tmp_path):
    n_images = len([p for p in IMAGES.iterdir() if p.suffix in (".jpg", ".png")])
    doc = run("top", MODEL, IMAGES, "--layer", 3, "--channels", 3, "-k", 4, "--out", tmp_path,
              "--format", "json", "--quiet")
    assert doc["scanned"] == n_images and doc["skipped"] == 0
    assert doc["receptive_field"] == [75, 75] and doc["preprocess"]["preset"] == "imagenet"
    assert len(doc["channels"]) == 3 and is_png(doc["overview"])
    for ch in doc["channels"]:
        acts = [e["activation"] for e in ch["entries"]]
        assert len(acts) == 4 and acts == sorted(acts, reverse=True)
        assert len({e["image"] for e in ch["entries"]}) == 4  # each image at most once per channel
        for e in ch["entries"]:
            y0, x0, y1, x1 = e["box"]
            assert 0 <= y0 < y1 <= 112 and 0 <= x0 < x1 <= 112 and y1 - y0 <= 75
        assert is_png(ch["files"]["grid"])


def test_features_and_filters_on_the_sample_network(tmp_path):
    feats = run("features", MODEL, IMAGES / "chelsea.jpg", "--layer", 2, "--out", tmp_path, "--format", "json")
    assert feats["shape"] == [128, 14, 14] and len(feats["channels"]) == 128
    maxima = [c["max"] for c in feats["channels"]]
    assert maxima == sorted(maxima, reverse=True) and maxima[0] > 0
    assert is_png(feats["montage"])
    filt = run("filters", MODEL, "--layer", 1, "--out", tmp_path, "--format", "json")
    assert filt["rgb"] is True and filt["weight_shape"] == [48, 3, 7, 7] and len(filt["filters"]) == 48
    assert is_png(filt["montage"])


def test_project_on_the_sample_network(tmp_path):
    doc = run("project", MODEL, IMAGES / "star.png", "--layer", 5, "--top", 2, "--out", tmp_path, "--format", "json")
    assert doc["tensor"] == "relu5" and len(doc["results"]) == 2
    for r in doc["results"]:
        assert is_png(r["files"]["png"]) and is_png(r["files"]["figure"])
