"""The class activation map formulas, in numpy, as pytorch-grad-cam computes them.

Every function takes the layer's activations ``acts`` and (for the gradient methods) the gradient
of the score at them ``grads``, both float32 [R, C, h, w] (one row per image and score), and
returns the raw maps [R, h, w]: float32, after the ReLU, at the layer's own resolution (before any
upsampling or normalisation).

    gradcam    ReLU(Σ_k mean_ij(∂y/∂A_k) A_k)                      (Selvaraju et al.)
    gradcam++  ReLU(Σ_k Σ_ij(ReLU(∂y/∂A_k) α_k,ij) A_k)             (Chattopadhay et al.)
    hirescam   ReLU(Σ_k ∂y/∂A_k ⊙ A_k)                             (Draelos & Carin)
    xgradcam   ReLU(Σ_k Σ_ij(∂y/∂A_k ⊙ A_k / Σ_ij A_k) A_k)          (Fu et al.)
    layercam   ReLU(Σ_k ReLU(∂y/∂A_k) ⊙ A_k)                       (Jiang et al.)
    eigencam   ReLU(first principal component of A)                (Muhammad & Yeasin; no gradient)
    scorecam   ReLU(Σ_k softmax_k(y(x ⊙ mask_k)) A_k)               (Wang et al.; forward runs only)

The constants (ε of Grad-CAM++ and XGrad-CAM, Score-CAM's mask normalisation and align-corners
bilinear upsampling, the softmax of its scores) are pytorch-grad-cam's.
"""

from __future__ import annotations

import numpy as np

from cnncli.choices import CAM_METHODS as METHODS  # noqa: F401  (gradient methods first)

GRADIENT_METHODS = METHODS[:5]


def _weighted(weights: np.ndarray, acts: np.ndarray) -> np.ndarray:
    return (weights[:, :, None, None] * acts).sum(axis=1)


def gradcam(acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
    return _weighted(grads.mean(axis=(2, 3)), acts)


def gradcam_pp(acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
    g2 = grads ** 2
    g3 = g2 * grads
    sums = acts.sum(axis=(2, 3), keepdims=True)
    aij = g2 / (2 * g2 + sums * g3 + np.float32(1e-6))
    aij = np.where(grads != 0, aij, 0)
    return _weighted((np.maximum(grads, 0) * aij).sum(axis=(2, 3)), acts)


def hirescam(acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
    return (grads * acts).sum(axis=1)


def xgradcam(acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
    sums = acts.sum(axis=(2, 3), keepdims=True)
    return _weighted((grads * acts / (sums + np.float32(1e-7))).sum(axis=(2, 3)), acts)


def layercam(acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
    return (np.maximum(grads, 0) * acts).sum(axis=1)


def eigencam(acts: np.ndarray) -> np.ndarray:
    """The activations [R, C, h, w] projected on their first principal component (over the
    positions, channels as features), as pytorch-grad-cam's get_2d_projection."""
    out = []
    for a in np.nan_to_num(acts, nan=0.0):
        flat = a.reshape(a.shape[0], -1).T
        flat = flat - flat.mean(axis=0)
        _, _, vt = np.linalg.svd(flat, full_matrices=False)
        out.append((flat @ vt[0]).reshape(a.shape[1:]))
    return np.asarray(out, dtype=np.float32)


_GRADIENT = {"gradcam": gradcam, "gradcam++": gradcam_pp, "hirescam": hirescam, "xgradcam": xgradcam,
             "layercam": layercam}


def gradient_map(method: str, acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """The raw map [R, h, w] (float32, after the ReLU) of a gradient method."""
    return relu(_GRADIENT[method](acts.astype(np.float32, copy=False), grads.astype(np.float32, copy=False)))


def relu(cam: np.ndarray) -> np.ndarray:
    return np.maximum(cam, 0).astype(np.float32, copy=False)


# ----------------------------------------------------------------------------- Score-CAM


def upsample(maps: np.ndarray, size: tuple[int, int], align_corners: bool = False) -> np.ndarray:
    """Bilinear upsampling of [..., h, w] to [..., H, W] (half-pixel centres as OpenCV's resize,
    or ``align_corners`` as torch's UpsamplingBilinear2d)."""
    from cnncli.reverse.resize import resize_matrix

    ctm = "align_corners" if align_corners else "half_pixel"
    ry = resize_matrix(maps.shape[-2], size[0], "linear", ctm, "")
    rx = resize_matrix(maps.shape[-1], size[1], "linear", ctm, "")
    return np.einsum("Yh,...hw,Xw->...YX", ry, maps.astype(np.float32, copy=False), rx, optimize=True)


def score_masks(acts: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Score-CAM's masks of one image: each channel of ``acts`` [C, h, w] upsampled to the input
    (align corners) and scaled to [0, 1]: [C, H, W]."""
    up = upsample(acts, size, align_corners=True)
    flat = up.reshape(up.shape[0], -1)
    lo, hi = flat.min(axis=1)[:, None, None], flat.max(axis=1)[:, None, None]
    return (up - lo) / (hi - lo + np.float32(1e-8))


def scorecam(acts: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """One image's maps [S, h, w] from its activations [C, h, w] and the scores [S, C] of each
    score (class) on the C masked inputs."""
    s = scores.astype(np.float32)
    e = np.exp(s - s.max(axis=1, keepdims=True))
    weights = e / e.sum(axis=1, keepdims=True)
    return relu(np.einsum("sc,chw->shw", weights, acts.astype(np.float32, copy=False)))
