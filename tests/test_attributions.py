"""`cnn project --smooth N` and `--integrated N` (issue 17) against Captum on a tiny torch CNN
exported to ONNX: NoiseTunnel(Saliency) smoothgrad (abs=False) with the very noise stored in the
fixture, and IntegratedGradients with the same steps and method (its convergence delta is the
completeness error). Fixtures: tests/fixtures/attributions/make_attribution_fixtures.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import cnncli
from cnncli.api.sources import load
from cnncli.cli import cli
from cnncli.engine import cam_metrics
from cnncli.engine.attributions import Attributor, path_weights, smooth_noise
from cnncli.engine.model_input import open_for_images
from cnncli.engine.project import Projector
from helpers import REPO

FIX = REPO / "tests" / "fixtures" / "attributions"
TINY = FIX / "tiny.onnx"
STAR = REPO / "sample_models" / "images" / "star.png"


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(FIX / "attributions.npz"))


def close(a, b, rtol=1e-4):
    """Equal up to ``rtol`` of the reference's largest magnitude."""
    scale = float(np.abs(b).max())
    assert scale > 0
    np.testing.assert_allclose(a, b, rtol=0, atol=rtol * scale)


def test_smoothgrad_equals_captum_with_the_same_noise(ref):
    x = ref["x"]
    m = open_for_images(load(TINY), array=("x", x.shape))
    attributor = Attributor(Projector(m.model, m.graph, m.input_name, "logits", "backprop", "cpu", False, 4), m.batchable)
    (sg,) = attributor.smoothgrad(x, [int(ref["target"])], ref["smooth_noise"])  # 6 copies, chunks of 4
    close(sg.array, ref["smoothgrad"][0])


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
@pytest.mark.parametrize("which", ["black", "file"])
def test_integrated_gradients_equal_captum(ref, tmp_path, method, which):
    x, c = ref["x"], int(ref["target"])
    base = "black"
    if which == "file":
        base = str(tmp_path / "b.npy")
        np.save(base, ref["baseline"])
    res = cnncli.project(TINY, x, tensor="logits", channels=[c], mode="backprop", integrated=int(ref["ig_steps"]),
                         baseline=base, ig_method=method)
    close(res[0].array, ref[f"ig_{method}_{which}"][0])
    row = res.rows[0]
    assert row.completeness_error == pytest.approx(abs(float(ref[f"ig_{method}_{which}_delta"][0])), rel=1e-3, abs=1e-6)
    assert row.attribution_sum == pytest.approx(float(res[0].array.sum(dtype=np.float64)), rel=1e-6)
    assert row.completeness_error == pytest.approx(abs(row.attribution_sum - (row.score - row.baseline_score)))


def test_path_weights_are_captums():
    alphas, sizes = path_weights(5, "gausslegendre")
    nodes, weights = np.polynomial.legendre.leggauss(5)
    np.testing.assert_allclose(alphas, 0.5 * (1 + nodes))
    np.testing.assert_allclose(sizes, 0.5 * weights)
    for method, first, last in (("riemann_left", 0, 0.8), ("riemann_right", 0.2, 1), ("riemann_middle", 0.1, 0.9),
                                ("riemann_trapezoid", 0, 1)):
        alphas, sizes = path_weights(5, method)
        assert alphas[0] == pytest.approx(first) and alphas[-1] == pytest.approx(last)
        assert sizes.sum() == pytest.approx(0.8 if method == "riemann_trapezoid" else 1.0)


def test_smooth_seed_picks_the_noise(ref):
    """The API's --smooth draws σ = noise · (max − min) · N(0, 1) from default_rng(seed): the same as
    the engine given smooth_noise's array; another seed gives another attribution."""
    x, c = ref["x"], int(ref["target"])
    a = cnncli.project(TINY, x, tensor="logits", channels=[c], mode="backprop", smooth=5, noise=0.2, seed=3)
    m = open_for_images(load(TINY), array=("x", x.shape))
    noise = smooth_noise(x, 5, 0.2, 3)
    assert noise.std() == pytest.approx(0.2 * float(x.max() - x.min()), rel=0.1)
    attributor = Attributor(Projector(m.model, m.graph, m.input_name, "logits", "backprop", "cpu", False, 64))
    (direct,) = attributor.smoothgrad(x, [c], noise)
    close(a[0].array, direct.array, 1e-6)
    b = cnncli.project(TINY, x, tensor="logits", channels=[c], mode="backprop", smooth=5, noise=0.2, seed=4)
    assert not np.allclose(a[0].array, b[0].array)
    assert a.meta["attribution"] == {"method": "smoothgrad", "samples": 5, "noise": 0.2,
                                     "sigma": pytest.approx(0.2 * float(x.max() - x.min())), "seed": 3}


def test_blur_and_black_baselines(ref, tmp_path):
    """blur: the input blurred by RISE's kernel; black: a black picture preprocessed as the input."""
    x, c = ref["x"], int(ref["target"])
    np.save(tmp_path / "blur.npy", cam_metrics.blur(x[0])[None])
    kw = dict(tensor="logits", channels=[c], mode="backprop", integrated=6)
    a = cnncli.project(TINY, x, baseline="blur", **kw)
    b = cnncli.project(TINY, x, baseline=str(tmp_path / "blur.npy"), **kw)
    np.testing.assert_array_equal(a[0].array, b[0].array)
    from PIL import Image

    Image.new("RGB", (40, 30)).save(tmp_path / "black.png")
    a = cnncli.project(TINY, str(STAR), size=(32, 32), baseline="black", **kw)
    b = cnncli.project(TINY, str(STAR), size=(32, 32), baseline=str(tmp_path / "black.png"), **kw)
    np.testing.assert_array_equal(a[0].array, b[0].array)
    assert a.rows[0].baseline_score == b.rows[0].baseline_score


def _cnn(*args):
    return CliRunner().invoke(cli, ["project", *map(str, args)])


def test_cli_json_rows_files_and_warning(ref, tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, ref["x"])
    r = _cnn(TINY, x, "--tensor", "logits", "--channel", "0,2", "--mode", "backprop", "--integrated", "1",
             "--out", tmp_path / "o", "--save-npy", "--format", "json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["attribution"] == {"method": "integrated_gradients", "steps": 1, "baseline": "black",
                                  "ig_method": "gausslegendre"}
    assert [row["channel"] for row in doc["results"]] == [0, 2]
    for row in doc["results"]:
        assert row["completeness_error"] == pytest.approx(
            abs(row["attribution_sum"] - (row["score"] - row["baseline_score"])))
        assert set(row["files"]) == {"png", "figure", "npy"}
        assert "_ig1-black-gausslegendre" in row["files"]["npy"]
        assert np.load(row["files"]["npy"]).shape == (1, 3, 32, 32)
    assert "completeness error" in r.stderr  # one step is far from the integral
    r = _cnn(TINY, x, "--tensor", "logits", "--channel", "1", "--mode", "backprop", "--smooth", "3", "--seed", "7",
             "--out", tmp_path / "o", "--format", "json")
    assert r.exit_code == 0, r.stderr
    row = json.loads(r.stdout)["results"][0]
    assert row["method"] == "smoothgrad" and row["samples"] == 3 and row["completeness_error"] is None
    assert row["files"]["png"].endswith("_smooth3-noise0.15-seed7.png")


@pytest.mark.parametrize("args", [
    ["--smooth", "2", "--integrated", "2"],
    ["--smooth", "2", "--mode", "deconvnet"],
    ["--integrated", "2", "--mode", "guided"],
    ["--noise", "0.1"],
    ["--baseline", "blur"],
    ["--ig-method", "riemann_left"],
    ["--smooth", "2", "--baseline", "blur"],
    ["--integrated", "2", "--noise", "0.1"],
    ["--smooth", "2", "--keep", "max"],
    ["--integrated", "1", "--ig-method", "riemann_trapezoid"],
    ["--smooth", "0"],
    ["--smooth", "2", "--noise", "0"],
    ["--smooth", "2", "--noise", "nan"],
    ["--smooth", "2", "--seed", "-1"],
])
def test_cli_bad_combinations_exit_2(ref, tmp_path, args):
    x = tmp_path / "x.npy"
    np.save(x, ref["x"])
    mode = [] if "--mode" in args else ["--mode", "backprop"]
    r = _cnn(TINY, x, "--tensor", "logits", "--channel", "0", *mode, *args, "--out", tmp_path / "o")
    assert r.exit_code == 2, (r.exit_code, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and not (tmp_path / "o").exists()


def test_a_model_with_a_fixed_batch_runs_one_input_at_a_time(ref):
    """A model whose batch is fixed at 1 takes the noisy copies / path points one per run: the same result."""
    import onnx

    fixed = onnx.load(TINY)
    for vi in (*fixed.graph.input, *fixed.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_value = 1
    x, c = ref["x"], int(ref["target"])
    kw = dict(tensor="logits", channels=[c], mode="backprop")
    for extra in ({"integrated": 5}, {"smooth": 3}):
        a = cnncli.project(fixed, x, **kw, **extra)
        b = cnncli.project(TINY, x, **kw, **extra)
        close(a[0].array, b[0].array, 1e-6)
        assert a.rows[0].score == pytest.approx(b.rows[0].score, rel=1e-6)
        if "integrated" in extra:
            assert a.rows[0].completeness_error == pytest.approx(b.rows[0].completeness_error, rel=1e-4, abs=1e-9)


def test_the_samples_are_one_batch(ref, monkeypatch):
    """--smooth 6: one forward run of the 6 copies (and one of the input) and one reverse run of 6
    rows; --batch-size 4 splits them 4 + 2."""
    runs = []
    forward, reverse = Projector.forward, Projector.run_reverse

    def counted_forward(self, x):
        runs.append(("forward", len(x)))
        return forward(self, x)

    def counted_reverse(self, seeds, fwd, paired=False):
        runs.append(("reverse", len(seeds) if len(seeds) <= self.max_batch else -1))
        return reverse(self, seeds, fwd, paired)

    monkeypatch.setattr(Projector, "forward", counted_forward)
    monkeypatch.setattr(Projector, "run_reverse", counted_reverse)
    x, c = ref["x"], int(ref["target"])
    cnncli.project(TINY, x, tensor="logits", channels=[c], mode="backprop", smooth=6)
    assert sorted(runs) == [("forward", 1), ("forward", 6), ("reverse", 6)]
    runs.clear()
    cnncli.project(TINY, x, tensor="logits", channels=[c], mode="backprop", smooth=6, batch_size=4)
    assert sorted(runs) == [("forward", 1), ("forward", 2), ("forward", 4), ("reverse", 2), ("reverse", 4)]
