"""cnncli.engine.cam_metrics (issue 17) against the references on the same map: RISE's
deletion/insertion game (the authors' CausalMetric) and pytorch-grad-cam's ROAD (its
NoisyLinearImputer's draws replayed), stored by tests/fixtures/attributions/make_attribution_fixtures.py
with a tiny ONNX model so that the score here is an onnxruntime session."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from cnncli.engine import cam_metrics as cm
from helpers import REPO

FIX = REPO / "tests" / "fixtures" / "attributions"


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(FIX / "cam_metrics.npz"))


@pytest.fixture(scope="module")
def score_fn(ref):
    sess = ort.InferenceSession(str(FIX / "tiny.onnx"), providers=["CPUExecutionProvider"])
    c = int(ref["target"])

    def score(batch):
        logits = sess.run(None, {"x": batch})[0].astype(np.float64)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True))[:, c]
    return score


class Replay:
    """An rng whose standard_normal hands back the draws pytorch-grad-cam's imputer made, in order."""

    def __init__(self, flat, sizes):
        self.parts = np.split(flat, np.cumsum(sizes)[:-1])

    def standard_normal(self, shape):
        z = self.parts.pop(0)
        assert z.size == int(np.prod(shape))
        return z.reshape(shape)


def test_blur_kernel_is_rises_gkern(ref):
    np.testing.assert_allclose(cm.blur_kernel(11, 5), ref["gkern"], rtol=1e-6, atol=1e-9)


def test_deletion_and_insertion_equal_rise(ref, score_fn):
    for mode in ("del", "ins"):
        curve = cm.causal_curve(score_fn, ref["image"], ref["cam"], mode, steps=20)
        assert curve.shape == ref[f"{mode}_curve"].shape == (21,)
        np.testing.assert_allclose(curve, ref[f"{mode}_curve"], rtol=1e-4, atol=1e-6)
        assert cm.auc(curve) == pytest.approx(float(ref[f"{mode}_auc"]), rel=1e-4)


def test_road_equals_pytorch_grad_cam(ref, score_fn):
    rng = Replay(ref["road_noise"], ref["road_noise_sizes"])
    res = cm.evaluate(score_fn, ref["image"], ref["cam"], rng=rng)
    assert not rng.parts  # every recorded draw used, in the same order
    for key in ("lerf", "morf"):
        got = [res[f"road_{key}_{p}"] for p in cm.PERCENTILES]
        np.testing.assert_allclose(got, ref[f"road_{key}"], rtol=1e-4, atol=1e-6)
        assert res[f"road_{key}"] == pytest.approx(float(ref[f"road_{key}_avg"]), rel=1e-4, abs=1e-6)
    assert res["road_combined"] == pytest.approx(float(ref["road_combined"]), rel=1e-4, abs=1e-6)
    assert res["deletion_auc"] == pytest.approx(float(ref["del_auc"]), rel=1e-4)
    assert res["insertion_auc"] == pytest.approx(float(ref["ins_auc"]), rel=1e-4)


def test_imputation_solves_the_neighbour_equations():
    """Each removed pixel ends up the weighted mean of its in-bounds neighbours (no noise), on a
    wide image and a tall one."""
    rng = np.random.default_rng(3)
    for h, w in ((5, 11), (12, 6)):
        img = rng.standard_normal((2, h, w)).astype(np.float32)
        keep = rng.random((h, w)) > 0.6
        out = cm.impute(img, keep, noise=0).astype(np.float64)
        np.testing.assert_array_equal(out[:, keep], img[:, keep])
        for y, x in zip(*np.nonzero(~keep)):
            acc, total = 0.0, 0.0
            for (dy, dx), wt in cm.NEIGHBOURS.items():
                if 0 <= y + dy < h and 0 <= x + dx < w:
                    acc, total = acc + wt * out[:, y + dy, x + dx], total + wt
            np.testing.assert_allclose(out[:, y, x], acc / total, rtol=1e-5, atol=1e-5)


def test_seeded_noise_is_reproducible_and_nothing_kept_is_nan(ref, score_fn):
    a = cm.evaluate(score_fn, ref["image"], ref["cam"], seed=5)
    b = cm.evaluate(score_fn, ref["image"], ref["cam"], seed=5)
    assert a == b and set(a) >= {"deletion_auc", "insertion_auc", "road_morf", "road_lerf", "road_combined"}
    assert np.isnan(cm.impute(ref["image"], np.zeros((32, 32), bool))).all()


def test_bad_shapes_are_refused(ref, score_fn):
    with pytest.raises(ValueError):
        cm.evaluate(score_fn, ref["image"], ref["cam"][:16])
    with pytest.raises(ValueError):
        cm.evaluate(score_fn, ref["image"], ref["cam"], steps=0)
