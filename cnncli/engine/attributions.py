"""Attributions at the pixels through the backprop reverse graph: SmoothGrad (Smilkov et al. 2017)
and integrated gradients (Sundararajan et al. 2017), as Captum's NoiseTunnel(Saliency)
smoothgrad (abs=False) and IntegratedGradients compute them.

The score of a channel is its value (a logit of a 2-D target) or its sum over space (a 4-D map);
the gradient is one run of the reverse graph seeded with ones at the channel. The N inputs a
method evaluates (noisy copies, points on the path) are one batch: one forward run per chunk of
``max_batch`` inputs and one reverse run per channel and chunk, each row paired with its own
forward values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from cnncli.choices import IG_METHODS


@dataclass
class Attribution:
    channel: int
    array: np.ndarray  # float32 [C, H, W], shaped like one model input
    score: float  # f(x): the channel's value (summed over space for a map) on the input
    baseline_score: float | None = None  # f(baseline) (integrated gradients)
    total: float | None = None  # Σ attribution (integrated gradients)

    @property
    def completeness_error(self) -> float | None:
        """|Σ attribution − (f(x) − f(baseline))| (Captum's convergence delta, unsigned)."""
        if self.total is None:
            return None
        return abs(self.total - (self.score - self.baseline_score))


def path_weights(steps: int, method: str = "gausslegendre") -> tuple[np.ndarray, np.ndarray]:
    """(alphas, step sizes) of Captum's approximation ``method`` with ``steps`` points: Gauss–Legendre
    nodes mapped to [0, 1] (weights halved), or Riemann sums (left, right, middle, trapezoid)."""
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return 0.5 * (1 + nodes), 0.5 * weights
    kind = method.removeprefix("riemann_")
    if method not in IG_METHODS or steps < 2:
        raise ValueError(f"{method} with {steps} steps (Riemann sums take at least 2)")
    sizes = np.full(steps, 1 / steps)
    if kind == "trapezoid":
        sizes[0] /= 2
        sizes[-1] /= 2
        return np.linspace(0, 1, steps), sizes
    start, stop = {"left": (0, 1 - 1 / steps), "right": (1 / steps, 1),
                   "middle": (1 / (2 * steps), 1 - 1 / (2 * steps))}[kind]
    return np.linspace(start, stop, steps), sizes


def smooth_noise(x: np.ndarray, samples: int, fraction: float, seed: int | None) -> np.ndarray:
    """SmoothGrad's noise: σ = ``fraction`` · (max − min of ``x``), N(0, σ²) drawn by
    ``np.random.default_rng(seed)``, float32 [samples, C, H, W]."""
    sigma = fraction * float(x.max() - x.min())
    rng = np.random.default_rng(seed)
    return (sigma * rng.standard_normal((samples, *x.shape[1:]))).astype(np.float32)


class Attributor:
    """Gradients of channel scores of a Projector's target (built in backprop mode) at many inputs."""

    def __init__(self, projector, batchable: bool = True, rows: int | None = None):
        """``rows``: inputs per run (default: the projector's batch); 1 where the model's batch is
        fixed, or the reverse graph takes one row per run (a recurrent layer)."""
        if projector.mode != "backprop":
            raise ValueError("attributions need the exact gradient: a backprop Projector")
        self.projector = projector
        rows = projector.max_batch if rows is None else rows
        self.chunk = max(1, rows if batchable and not projector.reverse.one_row else 1)
        projector.max_batch = max(projector.max_batch, self.chunk)  # one reverse run per chunk

    def scores(self, act: np.ndarray, channel: int) -> np.ndarray:
        """Each row's score: the channel's value, summed over the other axes."""
        return act[:, channel].reshape(len(act), -1).sum(axis=1, dtype=np.float64)

    def weighted_gradients(self, points: np.ndarray, weights: np.ndarray, channels: list[int]
                           ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """For each channel: (channel, Σ_i weights[i] · ∂f/∂x at points[i] as float32 [C, H, W],
        the scores at the points). Forward values of one chunk of points at a time are kept."""
        p = self.projector
        sums = {c: np.zeros(points.shape[1:], dtype=np.float32) for c in channels}
        scores = {c: [] for c in channels}
        for start in range(0, len(points), self.chunk):
            batch = np.ascontiguousarray(points[start:start + self.chunk], dtype=np.float32)
            fwd = p.last_forward = p.forward(batch)
            act = fwd[p.target]
            w = np.asarray(weights[start:start + self.chunk], dtype=np.float32)
            for c in channels:
                seeds = np.zeros((len(batch), *act.shape[1:]), dtype=np.float32)
                seeds[:, c] = 1.0
                grads = p.run_reverse(seeds, fwd, paired=True)
                sums[c] += np.tensordot(w, grads, axes=1)
                scores[c].append(self.scores(act, c))
            del fwd, act
        for c in channels:
            yield c, sums[c], np.concatenate(scores[c])

    def smoothgrad(self, x: np.ndarray, channels: list[int], noise: np.ndarray) -> Iterator[Attribution]:
        """The mean gradient over ``x + noise[i]`` (``x`` [1, C, H, W], ``noise`` [N, C, H, W])."""
        n = len(noise)
        points = x + noise
        base = self.projector.forward(np.ascontiguousarray(x, dtype=np.float32))[self.projector.target]
        for c, total, _ in self.weighted_gradients(points, np.ones(n), channels):
            yield Attribution(c, total / np.float32(n), float(self.scores(base, c)[0]))

    def integrated(self, x: np.ndarray, baseline: np.ndarray, channels: list[int], steps: int,
                   method: str = "gausslegendre") -> Iterator[Attribution]:
        """(x − b) · Σ_k w_k ∂f/∂x(b + α_k (x − b)) with Captum's alphas and step sizes."""
        alphas, sizes = path_weights(steps, method)
        delta = (x - baseline).astype(np.float32)
        points = np.concatenate([baseline + np.float32(a) * delta for a in alphas])
        ends = self._ends(x, baseline)
        for c, total, _ in self.weighted_gradients(points, sizes, channels):
            attr = (total * delta[0]).astype(np.float32)
            yield Attribution(c, attr, float(self.scores(ends[1:], c)[0]), float(self.scores(ends[:1], c)[0]),
                              float(attr.sum(dtype=np.float64)))

    def _ends(self, x: np.ndarray, baseline: np.ndarray) -> np.ndarray:
        """The target at [baseline, x] (two runs where the model takes one image per run)."""
        p = self.projector
        both = np.concatenate([baseline, x]).astype(np.float32)
        if self.chunk >= 2:
            return p.forward(both)[p.target]
        return np.concatenate([p.forward(both[i:i + 1])[p.target] for i in range(2)])
