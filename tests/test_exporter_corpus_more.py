"""The exporter corpus beyond torch (issue 16): tests/fixtures/exporters_more/.

Made by hand, each in its exporter's own venv (CI needs none of them), with the reference each
exporter's own side gives (tests/fixtures/make_more_*.py):

* Keras MobileNetV2 and MobileNetV3-Small (alpha 0.35, 96x96, random weights: hard swish,
  squeeze-excite) through tf2onnx, NHWC input: MACs by Keras layer arithmetic, params from
  count_params() less what tf2onnx folds (see the json's "how"), references by tf.GradientTape
  (deconvnet and guided with every ReLU's backward replaced, the ReLU6 in hard swish included);
* an Ultralytics YOLO built from its YAML (width-reduced) and exported by ultralytics: its own
  conv/linear count (hooks over nn.Conv2d/nn.Linear of the fused model), backprop references by
  torch autograd on the fused model;
* onnxruntime's quantizer (quantize_dynamic; quantize_static in QDQ format, calibrated on the
  bundled images) on sample_models/zfnet_mini.onnx: the float original's counts, from its file.

Each json names an early and a deep target tensor (ONNX name) and the channel to project.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cnncli.cli import cli

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "exporters_more"
REFS = {p.stem: json.loads(p.read_text()) for p in sorted(FIXTURES.glob("*.json"))}
MODES = ("deconvnet", "backprop", "guided")
# ops with no reverse rule yet (the models' stats still pass); a run that works turns these XPASS
NO_REVERSE: dict[str, str] = {}


def _targets(only=None):
    return [pytest.param(stem, t["name"], id=f"{stem}-{t['name']}",
                         marks=[pytest.mark.xfail(reason=NO_REVERSE[stem], strict=False)] if stem in NO_REVERSE else [])
            for stem, ref in REFS.items() for t in ref["targets"] if only is None or only(t)]


def _target(stem: str, name: str) -> dict:
    return next(t for t in REFS[stem]["targets"] if t["name"] == name)


def _project(stem: str, name: str, mode: str, out: Path, model: Path | None = None) -> tuple[dict, np.ndarray]:
    ref, t = REFS[stem], _target(stem, name)
    model = model or FIXTURES / ref["onnx"]
    result = CliRunner().invoke(cli, ["project", str(model), str(FIXTURES / ref["input"]), "--tensor", t["tensor"],
                                      "--channel", str(t["channel"]), "--mode", mode, "--out", str(out),
                                      "--save-npy", "--format", "json", "--quiet"])
    assert result.exit_code == 0, (result.stderr, result.exception)
    (row,) = json.loads(result.stdout)["results"]
    return row, np.load(row["files"]["npy"])


def test_corpus_is_here():
    """Every exporter the issue names, with its files and both targets."""
    exporters = " ".join(ref["exporter"] for ref in REFS.values())
    for name in ("tf2onnx", "ultralytics", "onnxruntime.quantization (dynamic)", "onnxruntime.quantization (qdq)"):
        assert name in exporters, name
    for stem, ref in REFS.items():
        assert (FIXTURES / ref["onnx"]).is_file() and (FIXTURES / ref["input"]).is_file(), stem
        assert [t["name"] for t in ref["targets"]] == ["early", "deep"], stem
        for t in ref["targets"]:
            assert t["backprop"] is None or (FIXTURES / t["backprop"]).is_file(), (stem, t)


@pytest.mark.parametrize("stem", list(REFS))
def test_stats_equal_the_exporters_own_count(stem):
    ref = REFS[stem]
    result = CliRunner().invoke(cli, ["stats", str(FIXTURES / ref["onnx"]), "--format", "json"])
    assert result.exit_code == 0, (result.stderr, result.exception)
    totals = json.loads(result.stdout)["totals"]
    assert totals["unknown_ops"] == [] and totals["incomplete"] is False, totals
    want = ref["reference"]
    # decode_constants: float constants an exporter writes that no framework counts (YOLO's anchor
    # grid and strides, as Constant nodes); cnncli counts a multi-element constant as weights
    params = want["params"] + want.get("decode_constants", 0)
    assert (totals["macs"], totals["params"]) == (want["macs"], params), \
        f"cnncli MACs {totals['macs']:,} params {totals['params']:,}; reference {want['macs']:,} / {params:,}"
    assert totals["macs_int8"] == want.get("macs_int8", 0)
    if "ultralytics_info" in want:  # model.info(): the fused model's params, GFLOPs = 2·MACs / 1e9
        assert want["ultralytics_info"]["params"] == want["params"]
        assert round(want["ultralytics_info"]["gflops"] * 1e9) == 2 * totals["macs"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("stem,name", _targets())
def test_project_runs_early_and_deep(stem, name, mode, tmp_path):
    """`cnn project --tensor` in every mode: exit 0, one finite, non-blank projection shaped like
    the input, of the channel whose maximum the exporter's side recorded."""
    t = _target(stem, name)
    row, p = _project(stem, name, mode, tmp_path)
    assert row["channel"] == t["channel"]
    assert row["max_activation"] == pytest.approx(t["max_activation"], rel=1e-3)
    assert p.shape == tuple(REFS[stem]["input_shape"]) and np.isfinite(p).all() and np.abs(p).max() > 0


@pytest.mark.parametrize("stem,name", _targets(lambda t: t["backprop"] is not None))
def test_backprop_equals_the_frameworks_gradient(stem, name, tmp_path):
    """Within 1e-5 of the largest value (the issue asks 1e-3; float32 reaches 3e-7 to 6e-7 here)."""
    _, p = _project(stem, name, "backprop", tmp_path)
    want = np.load(FIXTURES / _target(stem, name)["backprop"]).astype(np.float64)
    np.testing.assert_allclose(p, want, rtol=0, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("name", ["early", "deep"])
@pytest.mark.parametrize("stem", ["zfnet_mini.qdq", "zfnet_mini.dynamic"])
def test_quantized_backprop_follows_the_float_original(stem, name, tmp_path):
    """A quantized model has no gradient (piecewise constant); its straight-through projection should
    point where the float original's does: cosine ≥ 0.9 (int8 rounding moves ReLU and max-pool
    switches, so not equal), at the ReLU outputs (the QDQ file's DequantizeLinear of them; the
    dynamic file's ReLUs, after DynamicQuantizeLinear → ConvInteger → Cast → Mul by the scales)."""
    t = _target(stem, name)
    _, q = _project(stem, name, "backprop", tmp_path / "q")
    float_model = ROOT / REFS[stem]["float_original"]
    result = CliRunner().invoke(cli, ["project", str(float_model), str(FIXTURES / REFS[stem]["input"]), "--tensor",
                                      t["float_tensor"], "--channel", str(t["channel"]), "--mode", "backprop",
                                      "--out", str(tmp_path / "f"), "--save-npy", "--format", "json", "--quiet"])
    assert result.exit_code == 0, result.stderr
    f = np.load(json.loads(result.stdout)["results"][0]["files"]["npy"]).astype(np.float64).ravel()
    q = q.astype(np.float64).ravel()
    cosine = float(q @ f / np.linalg.norm(q) / np.linalg.norm(f))
    assert cosine >= 0.9, f"cosine {cosine:.3f} between the {stem} and the float original's backprop"


@pytest.mark.parametrize("mode", ["deconvnet", "guided"])
@pytest.mark.parametrize("stem,name", _targets(lambda t: t["backprop"] is not None))
def test_deconvnet_and_guided_equal_their_reference(stem, name, mode, tmp_path):
    """Only the ReLU family rectifies (README): a net without it (YOLO: SiLU = x·sigmoid(x)) gives
    the gradient in every mode; a Keras ReLU6 net gives what TF computes with ReLU6's backward
    replaced by max(R, 0) (deconvnet) or max(R, 0)·1[0 < x < 6] (guided)."""
    t = _target(stem, name)
    want = t.get(mode, t["backprop"] if not REFS[stem]["relu_family"] else None)
    if want is None:
        pytest.skip(f"no {mode} reference recorded for {stem}")
    _, p = _project(stem, name, mode, tmp_path)
    want = np.load(FIXTURES / want).astype(np.float64)
    np.testing.assert_allclose(p, want, rtol=0, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("mode", MODES)
def test_an_image_goes_into_a_keras_model_channels_first(mode, tmp_path):
    """A photo into the tf2onnx MobileNetV3 (NHWC input): its projection, channels-first, equals
    the projection of the same pixels given as an NHWC array (the path the tests above check
    against TensorFlow), transposed; the unit found is the same."""
    from PIL import Image

    stem = "mobilenetv3s_035"
    t = _target(stem, "deep")
    pixels = np.random.default_rng(5).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    np.save(tmp_path / "photo.npy", pixels[None].astype(np.float32))
    runs = {}
    for src in ("photo.png", "photo.npy"):
        result = CliRunner().invoke(cli, ["project", str(FIXTURES / REFS[stem]["onnx"]), str(tmp_path / src),
                                          "--tensor", t["tensor"], "--channel", str(t["channel"]), "--mode", mode,
                                          "--preset", "raw", "--out", str(tmp_path / src[-3:]), "--save-npy",
                                          "--format", "json", "--quiet"])
        assert result.exit_code == 0, (result.stderr, result.exception)
        (row,) = json.loads(result.stdout)["results"]
        runs[src] = row, np.load(row["files"]["npy"])
    (img_row, img), (npy_row, arr) = runs["photo.png"], runs["photo.npy"]
    assert img.shape == (1, 3, 96, 96) and arr.shape == (1, 96, 96, 3)
    assert img_row["max_activation"] == pytest.approx(npy_row["max_activation"], rel=1e-6)
    assert img_row["location"] == npy_row["location"]
    np.testing.assert_allclose(img, arr.transpose(0, 3, 1, 2), rtol=0, atol=1e-6 * np.abs(arr).max())
