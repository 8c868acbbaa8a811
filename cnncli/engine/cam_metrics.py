"""How good is a map: deletion and insertion AUC (Petsiuk et al., RISE, 2018) and ROAD's
most/least-relevant-first curves (Rong et al., 2022) as pytorch-grad-cam defines them, in numpy.

``score_fn`` maps a float32 batch [N, C, H, W] to scores [N] (the class's logit or probability:
the caller chooses); ``image`` is one model input [C, H, W] and ``cam`` its map [H, W] at the
input's resolution. Nothing here prints or reads files.

- Deletion / insertion (RISE's ``CausalMetric``): the pixels in order of decreasing map value,
  ``ceil(H·W / steps)`` per step; deletion starts from the image and sets them to 0, insertion
  starts from the image blurred by RISE's kernel (``gkern(11, 5)``, zero padding) and puts them
  back; the curve has one score per step and one before, its AUC is RISE's trapezoid mean.
- ROAD (``pytorch_grad_cam.metrics.road``): at percentile p the pixels with map value at or above
  the p-th percentile (most relevant first) or at or below the (100 − p)-th (least relevant first,
  the percentile of 1 − map) are replaced by the noisy linear imputation of Rong et al.: each
  removed pixel the weighted mean of its 8 neighbours (1/6 sideways, 1/12 diagonally), the removed
  pixels solved together, plus N(0, 0.01²) noise. The figure is the score's change; the average
  over percentiles 10…90 is ROADMostRelevantFirstAverage / ROADLeastRelevantFirstAverage, and
  ``road_combined`` ROADCombined's (LeRF − MoRF) / 2.

The imputation's sparse system is solved with scipy's spsolve, as pytorch-grad-cam does (a
block LU in numpy solved it exactly too, but ten times slower at 224×224: 205 s against 21 s for
ROAD's 18 imputations on a loaded 2-core machine, so scipy is a dependency).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)  # pytorch-grad-cam's ROAD*Average defaults
ROAD_NOISE = 0.01  # NoisyLinearImputer's default (absolute)
# (dy, dx) -> weight of a neighbour in the imputation (pytorch-grad-cam's neighbors_weights)
NEIGHBOURS = {(1, 1): 1 / 12, (0, 1): 1 / 6, (-1, 1): 1 / 12, (1, -1): 1 / 12,
              (0, -1): 1 / 6, (-1, -1): 1 / 12, (1, 0): 1 / 6, (-1, 0): 1 / 6}

ScoreFn = Callable[[np.ndarray], np.ndarray]


# ---------------------------------------------------------------- deletion / insertion (RISE)
def blur_kernel(klen: int = 11, nsig: float = 5.0) -> np.ndarray:
    """RISE's ``gkern(klen, nsig)``: scipy.ndimage.gaussian_filter(δ, nsig) of a centred delta
    (mode 'reflect', truncate 4), float64 [klen, klen]. The delta is separable, so it is the outer
    product of the 1-D filter of a 1-D delta."""
    radius = int(4.0 * nsig + 0.5)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (t / nsig) ** 2)
    w /= w.sum()
    delta = np.zeros(klen)
    delta[klen // 2] = 1.0
    padded = np.pad(delta, radius, mode="symmetric")  # scipy's 'reflect' (d c b a | a b c d | …)
    k1 = np.correlate(padded, w, mode="valid")
    return np.outer(k1, k1)


def blur(image: np.ndarray, klen: int = 11, nsig: float = 5.0) -> np.ndarray:
    """RISE's insertion substrate: each channel convolved with :func:`blur_kernel` (zero padding
    ``klen // 2``, as its ``conv2d``), float32 [C, H, W]."""
    k = blur_kernel(klen, nsig).astype(np.float32)
    pad = klen // 2
    c, h, w = image.shape
    x = np.pad(np.asarray(image, dtype=np.float32), ((0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((c, h, w), dtype=np.float32)
    for dy in range(klen):
        for dx in range(klen):
            out += k[dy, dx] * x[:, dy:dy + h, dx:dx + w]
    return out


def auc(curve: np.ndarray) -> float:
    """RISE's normalised area under a curve of n + 1 equally spaced points (the trapezoid rule)."""
    arr = np.asarray(curve, dtype=np.float64)
    return float((arr.sum() - arr[0] / 2 - arr[-1] / 2) / (arr.shape[0] - 1))


def causal_images(image: np.ndarray, cam: np.ndarray, mode: str, steps: int = 20) -> np.ndarray:
    """The images RISE's deletion ('del') or insertion ('ins') game scores: [n + 1, C, H, W]."""
    image = np.asarray(image, dtype=np.float32)
    hw = cam.size
    step = (hw + steps - 1) // steps
    n_steps = (hw + step - 1) // step
    if mode == "del":
        start, finish = image, np.zeros_like(image)
    elif mode == "ins":
        start, finish = blur(image), image
    else:
        raise ValueError(mode)
    order = np.flip(np.argsort(np.asarray(cam).reshape(-1), kind="stable"))  # decreasing saliency
    rank = np.empty(hw, dtype=np.int64)
    rank[order] = np.arange(hw)
    done = rank.reshape(cam.shape)[None] < (np.arange(n_steps + 1) * step)[:, None, None]  # [n + 1, H, W]
    return np.where(done[:, None], finish[None], start[None])


def causal_curve(score_fn: ScoreFn, image: np.ndarray, cam: np.ndarray, mode: str, steps: int = 20) -> np.ndarray:
    """The score after each step of RISE's deletion or insertion game (float64, n + 1 points)."""
    return _scores(score_fn, causal_images(image, cam, mode, steps))


# ---------------------------------------------------------------- ROAD (noisy linear imputation)
def _equations(keep: np.ndarray, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NoisyLinearImputer.setup_sparse_system's coefficients on the grid: each pixel's sum of its
    in-bounds neighbours' weights [H, W] (the diagonal, negated) and minus the weighted sum of its
    kept neighbours' values [H, W, C] (the right-hand side)."""
    h, w, c = img.shape
    valid = np.ones((h, w))
    known = np.pad(img * keep[..., None], ((1, 1), (1, 1), (0, 0)))
    rhs_all = np.zeros_like(img)
    for (dy, dx), wt in NEIGHBOURS.items():
        inb = np.zeros((h, w), dtype=bool)
        inb[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)] = True
        valid -= wt * ~inb
        rhs_all -= wt * known[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
    return valid, rhs_all


def _solve_sparse(keep: np.ndarray, img: np.ndarray) -> np.ndarray:
    """The same system as pytorch-grad-cam solves it, with scipy's spsolve (SuperLU) on the sparse
    matrix: [n_removed, C] in raster order."""
    from scipy.sparse import csc_matrix
    from scipy.sparse.linalg import spsolve

    h, w, c = img.shape
    valid, rhs_all = _equations(keep, img)
    ys, xs = np.nonzero(~keep)
    n = ys.size
    index = np.full((h + 2, w + 2), -1)
    index[ys + 1, xs + 1] = np.arange(n)
    rows, cols, vals = [np.arange(n)], [np.arange(n)], [-valid[ys, xs]]
    for (dy, dx), wt in NEIGHBOURS.items():
        j = index[ys + 1 + dy, xs + 1 + dx]
        ok = j >= 0
        rows.append(np.flatnonzero(ok))
        cols.append(j[ok])
        vals.append(np.full(int(ok.sum()), wt))
    a = csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    return np.asarray(spsolve(a, rhs_all[ys, xs])).reshape(n, c)


def impute(image: np.ndarray, keep: np.ndarray, noise: float = ROAD_NOISE, rng=None) -> np.ndarray:
    """pytorch-grad-cam's NoisyLinearImputer: the pixels where ``keep`` is False replaced by the
    linear imputation plus ``noise`` · N(0, 1) (drawn as ``rng.standard_normal((C, n_removed))``,
    float32, like its ``torch.randn_like``). With nothing kept the system is singular: NaN, as
    scipy's spsolve gives."""
    image = np.asarray(image, dtype=np.float32)
    keep = np.asarray(keep, dtype=bool)
    c, h, w = image.shape
    removed = np.flatnonzero(~keep.reshape(-1))
    flat = image.reshape(c, -1).copy()
    if removed.size == 0:
        return image.copy()
    if not keep.any():
        solved = np.full((c, removed.size), np.nan, dtype=np.float32)
    else:
        solved = _solve_sparse(keep, np.moveaxis(image, 0, -1).astype(np.float64)).T.astype(np.float32)
    if noise:
        rng = np.random.default_rng() if rng is None else rng
        solved = solved + np.float32(noise) * np.asarray(rng.standard_normal((c, removed.size)), dtype=np.float32)
    flat[:, removed] = solved
    return flat.reshape(c, h, w)


def road_keep(cam: np.ndarray, percentile: float, most_relevant_first: bool = True) -> np.ndarray:
    """The pixels ROAD keeps at ``percentile`` (RemoveMostRelevantFirst / RemoveLeastRelevantFirst):
    map < its percentile, or 1 − map < the percentile of 1 − map (compared in the map's dtype)."""
    cam = np.asarray(cam)
    if not np.issubdtype(cam.dtype, np.floating):
        cam = cam.astype(np.float32)
    mask = cam if most_relevant_first else (1 - cam).astype(cam.dtype)
    threshold = np.percentile(mask, percentile)
    return mask < cam.dtype.type(threshold)


def road_images(image: np.ndarray, cam: np.ndarray, percentiles=PERCENTILES, most_relevant_first: bool = True,
                noise: float = ROAD_NOISE, rng=None) -> np.ndarray:
    """The imputed images ROAD scores, one per percentile: [P, C, H, W]."""
    return np.stack([impute(image, road_keep(cam, p, most_relevant_first), noise, rng) for p in percentiles])


# ---------------------------------------------------------------- all together
def _scores(score_fn: ScoreFn, batch: np.ndarray) -> np.ndarray:
    scores = np.asarray(score_fn(np.ascontiguousarray(batch, dtype=np.float32)), dtype=np.float64).reshape(-1)
    if scores.shape[0] != batch.shape[0]:
        raise ValueError(f"score_fn returned {scores.shape[0]} scores for {batch.shape[0]} images")
    return scores


def _check(image: np.ndarray, cam: np.ndarray) -> None:
    if image.ndim != 3 or cam.ndim != 2 or tuple(cam.shape) != tuple(image.shape[1:]):
        raise ValueError(f"image [C, H, W] and cam [H, W] of the same H, W are needed; got {image.shape} and {cam.shape}")


def evaluate(score_fn: ScoreFn, image: np.ndarray, cam: np.ndarray, steps: int = 20,
             percentiles=PERCENTILES, rng=None, seed: int = 0) -> dict[str, float]:
    """Deletion and insertion AUC, ROAD's per-percentile score changes and their averages.

    Keys: ``score`` (the image's own), ``deletion_auc``, ``insertion_auc``, ``road_morf`` and
    ``road_lerf`` (means over ``percentiles``; MoRF: lower is better, LeRF: higher is better),
    ``road_combined`` ((LeRF − MoRF) / 2) and ``road_morf_<p>``, ``road_lerf_<p>`` per percentile.
    ROAD's noise comes from ``rng`` (LeRF's draws first, then MoRF's, as ROADCombined), by default
    ``np.random.default_rng(seed)``. :func:`curves` gives the
    curves themselves."""
    c = curves(score_fn, image, cam, steps, percentiles, rng, seed)
    out = {"score": float(c["score"]), "deletion_auc": auc(c["deletion"]), "insertion_auc": auc(c["insertion"])}
    for key in ("morf", "lerf"):
        out[f"road_{key}"] = float(np.mean(c[f"road_{key}"].astype(np.float32)))
    out["road_combined"] = (out["road_lerf"] - out["road_morf"]) / 2
    for key in ("morf", "lerf"):
        out.update({f"road_{key}_{p}": float(v) for p, v in zip(percentiles, c[f"road_{key}"])})
    return out


def curves(score_fn: ScoreFn, image: np.ndarray, cam: np.ndarray, steps: int = 20,
           percentiles=PERCENTILES, rng=None, seed: int = 0) -> dict[str, np.ndarray]:
    """The curves behind :func:`evaluate`: ``deletion`` and ``insertion`` (scores after 0…n steps),
    ``road_morf`` and ``road_lerf`` (score change at each percentile; float32 as
    pytorch-grad-cam's), ``score`` (the image's own)."""
    image, cam = np.asarray(image, dtype=np.float32), np.asarray(cam)
    _check(image, cam)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be a whole number of at least 1, not {steps!r}")
    rng = np.random.default_rng(seed) if rng is None else rng
    dele = causal_images(image, cam, "del", steps)
    ins = causal_images(image, cam, "ins", steps)
    lerf = road_images(image, cam, percentiles, False, ROAD_NOISE, rng)  # (ROADCombined's order)
    morf = road_images(image, cam, percentiles, True, ROAD_NOISE, rng)
    scores = _scores(score_fn, np.concatenate([image[None], dele, ins, lerf, morf]))
    n, p = len(dele), len(percentiles)
    base = np.float32(scores[0])
    road = scores[1 + 2 * n:].astype(np.float32) - base
    return {"score": scores[0], "deletion": scores[1:1 + n], "insertion": scores[1 + n:1 + 2 * n],
            "road_lerf": road[:p], "road_morf": road[p:]}
