"""`cnn dream` (issue 17): feature visualisation as Lucent does it, on onnxruntime.

- the parametrisation (FFT spectrum -> decorrelated colours -> sigmoid) and the transforms (pad,
  jitter, scale, rotate, jitter, resize, the model's normalisation) against central finite
  differences in float64, and against Lucent's own outputs and gradients
  (tests/fixtures/dream/dream.npz, made by make_dream_fixture.py with torch-lucent), Adam against
  torch.optim.Adam;
- the objective rises on the bundled net; a channel's image does not depend on the batch it is in;
- the command line: JSON document, files read back (non-blank PNGs), exit codes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import cnncli
from cnncli.cli import cli
from cnncli.engine.dream import Adam, Normalise, objective
from cnncli.engine.dream_param import FFTImage
from cnncli.engine.dream_transforms import Chain, Draw, draw
from cnncli.imaging.preprocess import preset
from helpers import REPO

MODEL = str(REPO / "sample_models" / "zfnet_mini.onnx")
FIXTURE = np.load(Path(__file__).parent / "fixtures" / "dream" / "dream.npz")
DRAWS = [Draw((3, 5), 1.06, 7, (1, 2)), Draw((0, 0), 0.9, -10, (3, 0)), Draw((7, 7), 1.1, 0, (0, 3)),
         Draw((2, 1), 0.92, 4, (2, 2))]


def _fixture_draw(row) -> Draw:
    return Draw((int(row[0]), int(row[1])), float(row[2]), float(row[3]), (int(row[4]), int(row[5])))


def _directional(f, p, d, eps=1e-6):
    return (f(p + eps * d) - f(p - eps * d)) / (2 * eps)


@pytest.mark.parametrize("h, w, channels", [(6, 8, 3), (7, 5, 3), (5, 6, 1)])
def test_parametrisation_gradient_is_finite_differences(h, w, channels):
    param = FFTImage(2, channels, h, w)
    rng = np.random.default_rng(h * w)
    p = param.init([1, 2]).astype(np.float64) * 40  # away from the sigmoid's flat middle
    r = rng.standard_normal((2, channels, h, w))
    grad = param.backward(param.image(p), r)
    for _ in range(3):
        d = rng.standard_normal(p.shape)
        fd = _directional(lambda q: float((param.image(q) * r).sum()), p, d)
        assert float((grad * d).sum()) == pytest.approx(fd, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("d", DRAWS + [draw(np.random.RandomState(s)) for s in range(3)])
@pytest.mark.parametrize("size", [(20, 20), (17, 23)])
def test_parametrisation_and_transforms_gradient_is_finite_differences(d, size):
    """spectrum -> image -> transforms -> resize to the model input -> the model's normalisation (caffe:
    BGR, 0-255): the transpose the optimiser uses, against central differences in float64."""
    param = FFTImage(1, 3, *size)
    chain = Chain(size, d, (16, 16))
    norm = Normalise.of(preset("caffe", 3), 3)
    rng = np.random.default_rng(3)
    p = param.init([(0, 5)]).astype(np.float64) * 30
    r = rng.standard_normal((1, 3, 16, 16))

    def f(q):
        return float((norm.forward(chain.forward(param.image(q))) * r).sum())

    img = param.image(p)
    grad = param.backward(img, chain.transpose(norm.transpose(r)))
    for _ in range(2):
        direction = rng.standard_normal(p.shape)
        assert float((grad * direction).sum()) == pytest.approx(_directional(f, p, direction), rel=1e-6)


@pytest.mark.parametrize("k", range(4))
def test_transforms_match_lucents(k):
    """Lucent's standard_transforms and final resize (kornia 0.4.1 warps included) on the same draws."""
    image = FIXTURE["image"]
    chain = Chain(image.shape[2:], _fixture_draw(FIXTURE["draws"][k]), (10, 10))
    np.testing.assert_allclose(chain.forward(image), FIXTURE[f"t{k}_out"], atol=2e-5)
    np.testing.assert_allclose(chain.transpose(FIXTURE[f"t{k}_r"]), FIXTURE[f"t{k}_grad"], atol=1e-4)


def test_parametrisation_matches_lucents():
    param = FFTImage(1, 3, 12, 14)
    spectrum = FIXTURE["p_spectrum"]
    assert spectrum.shape == param.shape
    image = param.image(spectrum)
    np.testing.assert_allclose(image, FIXTURE["p_image"], atol=1e-6)
    np.testing.assert_allclose(param.backward(image, FIXTURE["p_r"]), FIXTURE["p_grad"], rtol=1e-4, atol=1e-5)


def test_adam_matches_torch():
    adam, p = Adam(0.05), FIXTURE["adam_start"].copy()
    for g in FIXTURE["adam_grads"]:
        p = adam.step(p, g)
    np.testing.assert_allclose(p, FIXTURE["adam_end"], rtol=1e-6, atol=1e-7)


def test_objectives_and_their_seeds():
    act = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    values, seeds = objective(act, [1, 2], "channel")
    assert values.tolist() == [act[0, 1].mean(), act[1, 2].mean()]
    assert seeds[0, 1].sum() == pytest.approx(1) and seeds[0, 0].sum() == 0 and seeds[1, 2].sum() == pytest.approx(1)
    values, seeds = objective(act, [1, 2], "neuron")  # Lucent's centre: [shape[3] // 2, shape[2] // 2]
    assert values.tolist() == [act[0, 1, 2, 2], act[1, 2, 2, 2]] and seeds.sum() == 2
    values, seeds = objective(act, [None], "layer")
    assert values[0] == pytest.approx(float(np.mean(act[0].astype(np.float64) ** 2)))
    np.testing.assert_allclose(seeds[0], 2 * act[0] / act[0].size)


def test_objective_rises_and_images_do_not_depend_on_their_batch():
    together = cnncli.dream(MODEL, layer=2, channels=[3, 7], steps=12, size=48, seed=4)
    for i, row in enumerate(together.rows):
        assert row.objective_end > 3 * row.objective_start + 0.1, row  # (0.02 -> 0.18 and 0.001 -> 0.13)
        assert together.history[-3:, i].mean() > together.history[:3, i].mean() + 0.05
    assert together.history.shape == (12, 2) and together.images.shape == (2, 3, 48, 48)
    alone = cnncli.dream(MODEL, layer=2, channels=[7], steps=12, size=48, seed=4)
    np.testing.assert_allclose(alone.images[0], together.images[1], atol=2e-3)
    other_seed = cnncli.dream(MODEL, layer=2, channels=[7], steps=12, size=48, seed=5)
    assert not np.allclose(other_seed.images[0], alone.images[0], atol=0.05)


def test_progress_counts_every_step():
    ticks = []
    from cnncli.api.dream import DreamOptions, run

    run(MODEL, DreamOptions(layer=1, channels="0,1,2", steps=3, size=16, batch_size=2),
        progress=lambda n, total=None: ticks.append((n, total)))
    assert ticks[0] == (0, 6) and ticks[1:] == [(1, None)] * 6


def _cli(*args):
    return CliRunner().invoke(cli, ["dream", *map(str, args)], catch_exceptions=False)


def test_json_document_and_files_read_back(tmp_path):
    out = tmp_path / "o"
    r = _cli(MODEL, "--layer", 2, "--channel", "3,7", "--steps", 6, "--size", 40, "--out", out, "--format", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert [doc[k] for k in ("tensor", "layer", "objective", "steps", "size", "seed", "lr")] == \
        ["relu2", 2, "channel", 6, [40, 40], 0, 0.05]
    assert [row["channel"] for row in doc["results"]] == [3, 7]
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted([Path(row["files"]["png"]).name for row in doc["results"]] + [Path(doc["montage"]).name])
    api = cnncli.dream(MODEL, layer=2, channels=[3, 7], steps=6, size=40)
    for row, api_row, image in zip(doc["results"], api.rows, api.images):
        assert row["objective_end"] == pytest.approx(api_row.objective_end, rel=1e-6)
        with Image.open(row["files"]["png"]) as im:
            pixels = np.asarray(im)
        assert pixels.shape == (40, 40, 3) and pixels.std() > 5  # not blank
        np.testing.assert_array_equal(pixels, np.clip(np.round(image.transpose(1, 2, 0) * 255), 0, 255))
    with Image.open(doc["montage"]) as im:
        assert im.width > 80 and np.asarray(im).std() > 5


def test_layer_and_neuron_objectives_and_a_2d_target(tmp_path):
    r = _cli(MODEL, "--layer", 4, "--objective", "layer", "--steps", 3, "--size", 24, "--out", tmp_path, "--format", "csv")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0] == "channel,objective_start,objective_end,files.png" and r.stdout.splitlines()[1][0] == ","
    r = _cli(MODEL, "--tensor", "logits", "--channel", 3, "--objective", "neuron", "--steps", 3, "--size", 24,
             "--out", tmp_path, "--format", "json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["results"][0]["channel"] == 3


@pytest.mark.parametrize("args, flag", [
    (["--layer", 6, "--channel", 1], "--layer"),
    (["--layer", 5, "--channel", 128], "--channel"),
    (["--layer", 5], "--channel"),
    (["--layer", 5, "--channel", 1, "--objective", "layer"], "--channel"),
    (["--layer", 5, "--channel", 1, "--steps", 0], "--steps"),
    (["--layer", 5, "--channel", 1, "--lr", "nan"], "--lr"),
    (["--layer", 5, "--channel", 1, "--size", "4"], "--size"),
    (["--channel", 1], "--layer"),
])
def test_bad_usage_exits_2(args, flag, tmp_path):
    r = _cli(MODEL, *args, "--out", tmp_path)
    assert r.exit_code == 2, r.output
    assert flag in r.stderr and "Traceback" not in r.output
    assert list(tmp_path.iterdir()) == []


def test_unreadable_model_exits_1(tmp_path):
    r = _cli(tmp_path / "missing.onnx", "--layer", 1, "--channel", 0, "--out", tmp_path / "o")
    assert r.exit_code == 1 and r.stderr.startswith("Error: ") and len(r.stderr.splitlines()) == 1


def test_a_diverging_learning_rate_is_an_error_and_writes_no_picture(tmp_path):
    r = _cli(MODEL, "--layer", 2, "--channel", 1, "--steps", 4, "--size", "32x32", "--lr", "1e308",
             "--out", tmp_path / "o")
    assert r.exit_code == 1 and "diverged" in r.stderr and "--lr" in r.stderr.splitlines()[-1]
    assert not (tmp_path / "o").exists() or list((tmp_path / "o").iterdir()) == []


@pytest.mark.parametrize("batch", ["N", 1])
def test_a_grey_model_and_a_fixed_batch(batch):
    """One input channel: no colour decorrelation, grey pictures; a batch fixed at 1: one channel a
    run, the same images as batched."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 1, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"])], "grey",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 1, 16, 16])],
        [helper.make_tensor_value_info("r", TensorProto.FLOAT, None)], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    ticks = []
    from cnncli.api.dream import DreamOptions, run

    d = run(model, DreamOptions(layer=1, channels=[0, 2], steps=10), progress=lambda n, total=None: ticks.append(total))
    assert d.images.shape == (2, 1, 16, 16) and d.meta["preprocess"]["preset"] == "unit"
    assert ticks[0] == (20 if batch == 1 else 10) and len(ticks) == 21 - (0 if batch == 1 else 10)
    pixels = d.to_uint8(1)
    assert pixels.shape == (16, 16, 3) and (pixels[..., 0] == pixels[..., 2]).all()
    assert all(r.objective_end > r.objective_start for r in d.rows)
    batched = cnncli.dream(onnx.load_from_string(model.SerializeToString()), layer=1, channels=[0, 2], steps=10, batch_size=1)
    np.testing.assert_allclose(batched.images, d.images, atol=1e-4)
