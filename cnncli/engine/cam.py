"""The class activation map engine: one forward run per batch of images (the layer's activations
and the score tensor), then for the gradient methods one batched run of the generated reverse
graph from the score back to the layer (backprop mode, stopped at the layer: the exact gradient,
cnncli.reverse.builder's ``stop_at``), one row per image and score; Score-CAM runs the masked
inputs forward in batches instead. The formulas are in :mod:`cnncli.engine.cam_methods`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnncli.engine.cam_methods import GRADIENT_METHODS, eigencam, gradient_map, relu, score_masks, scorecam, upsample
from cnncli.errors import CnnError, UnsupportedError


@dataclass(frozen=True)
class Score:
    """What y is: unit ``index`` of ``tensor`` (a 2-D tensor: one class's logit), or channel
    ``index`` of a 4-D tensor summed over space."""

    tensor: str
    shape: tuple  # the tensor's shape at batch 1

    def values(self, out: np.ndarray, units: list[int]) -> np.ndarray:
        """The scores [N, len(units)] of a batch's score-tensor values ``out`` [N, D(, h, w)]."""
        sel = out[:, units]
        return sel.reshape(sel.shape[0], sel.shape[1], -1).sum(axis=2) if sel.ndim > 2 else sel

    def seeds(self, units: list[int]) -> np.ndarray:
        """One reverse seed row per unit: ∂y/∂(score tensor), 1 on the unit (or its plane)."""
        seeds = np.zeros((len(units), *self.shape[1:]), dtype=np.float32)
        for row, u in enumerate(units):
            seeds[row, u] = 1.0
        return seeds


@dataclass
class CamBatch:
    """One batch of images: the scores [N, S] of the chosen units [N][S], the raw maps
    [N, S, h, w] (after the ReLU, at the layer's resolution), the guided-backprop images
    [N, S, C, H, W] (or None) and the number of forward runs made."""

    units: list[list[int]]
    scores: np.ndarray
    maps: np.ndarray
    guided: np.ndarray | None
    forwards: int


class CamEngine:
    """Class activation maps of ``layer`` (a 4-D tensor) for scores of ``score.tensor``."""

    def __init__(self, model, graph, input_name: str, layer: str, score: Score, method: str, provider: str = "cpu",
                 verbose: bool = False, max_batch: int = 64, guided: bool = False):
        from cnncli.engine.project import Projector, forward_model
        from cnncli.runtime.sessions import make_session

        self.layer, self.score, self.method, self.max_batch = layer, score, method, max_batch
        self.input_name = input_name
        try:
            if method in GRADIENT_METHODS:
                self.grad = Projector(model, graph, input_name, score.tensor, "backprop", provider, verbose, max_batch,
                                      stop_at=layer)
            else:
                self.grad = None
                fwd = forward_model(model, [layer, score.tensor], {}, graph.types)
                self._fwd = make_session(fwd.SerializeToString(), provider, verbose, spin=False)
            self.guide = Projector(model, graph, input_name, score.tensor, "guided", provider, verbose,
                                   max_batch) if guided else None
        except UnsupportedError as exc:
            raise CnnError(f"cannot compute the gradient of '{score.tensor}' at '{layer}': {exc}") from None
        self._scorer = None
        self._model, self._graph, self._provider, self._verbose = model, graph, provider, verbose
        self.forwards = 0

    def forward(self, x: np.ndarray) -> dict[str, np.ndarray]:
        from cnncli.runtime.sessions import ort_message

        self.forwards += len(x)
        if self.grad is not None:
            return self.grad.forward(x)
        try:
            act, out = self._fwd.run([self.layer, self.score.tensor], {self.input_name: x})
        except Exception as exc:
            raise CnnError(f"the forward run failed: {ort_message(exc)}") from None
        return {self.layer: act, self.score.tensor: out}

    def score_batch(self, x: np.ndarray) -> np.ndarray:
        """The score tensor's values on a batch of inputs (Score-CAM's masked images; the metrics)."""
        from cnncli.runtime.sessions import ort_message

        if self._scorer is None:
            from cnncli.engine.project import forward_model
            from cnncli.runtime.sessions import make_session

            cut = forward_model(self._model, [self.score.tensor], {}, self._graph.types)
            self._scorer = make_session(cut.SerializeToString(), self._provider, self._verbose, spin=False)
        out = []
        for start in range(0, len(x), self.max_batch):
            chunk = np.ascontiguousarray(x[start:start + self.max_batch], dtype=np.float32)
            self.forwards += len(chunk)
            try:
                out.append(self._scorer.run([self.score.tensor], {self.input_name: chunk})[0])
            except Exception as exc:
                raise CnnError(f"the forward run failed: {ort_message(exc)}") from None
        return np.concatenate(out, axis=0)

    def evaluate(self, x: np.ndarray, unit: int, cam: np.ndarray) -> dict[str, float]:
        """How good a map is (cnncli.engine.cam_metrics): deletion and insertion AUC and ROAD's
        curves of the score of ``unit`` for one input ``x`` [C, H, W] and its map ``cam`` [H, W]."""
        from cnncli.engine.cam_metrics import evaluate

        return evaluate(lambda batch: self.score.values(self.score_batch(batch), [unit])[:, 0], x, cam)

    def run(self, x: np.ndarray, choose) -> CamBatch:
        """The maps of a batch of inputs ``x`` [N, C, H, W]; ``choose(out)`` picks each image's
        units from the score tensor's values ``out`` ([N][S] lists, S the same for every image)."""
        before = self.forwards
        fwd = self.forward(x)
        act, out = fwd[self.layer], fwd[self.score.tensor]
        units = choose(out)
        n, s = len(units), len(units[0])
        scores = np.stack([self.score.values(out[i:i + 1], units[i])[0] for i in range(n)])
        flat_units = [u for row in units for u in row]
        seeds = self.score.seeds(flat_units)
        acts = np.repeat(act, s, axis=0)
        if self.grad is not None:
            grads = self.grad.run_reverse(seeds, _rows(fwd, s, self.grad), paired=n > 1)
            maps = gradient_map(self.method, acts, grads)
        elif self.method == "eigencam":
            maps = np.repeat(relu(eigencam(act)), s, axis=0)
        else:
            maps = np.concatenate([self._scorecam(x[i], act[i], units[i]) for i in range(n)])
        guided = None
        if self.guide is not None:
            gfwd = self.guide.forward(x)
            guided = self.guide.run_reverse(seeds, _rows(gfwd, s, self.guide), paired=n > 1)
            guided = guided.reshape(n, s, *guided.shape[1:])
        return CamBatch(units, scores, maps.reshape(n, s, *maps.shape[1:]), guided, self.forwards - before)

    def _scorecam(self, x: np.ndarray, act: np.ndarray, units: list[int]) -> np.ndarray:
        """One image's Score-CAM maps: the input masked by each channel's map, ``max_batch``
        masked inputs at a time (never all C of them in memory at once)."""
        masks = score_masks(act, x.shape[1:])
        step = self.max_batch
        scores = np.concatenate([self.score.values(self.score_batch(x[None] * masks[i:i + step, None]), units)
                                 for i in range(0, len(masks), step)])
        return scorecam(act, scores.T)


def _rows(fwd: dict[str, np.ndarray], s: int, projector) -> dict[str, np.ndarray]:
    """The forward values each reverse row reads: every image's repeated for its ``s`` scores
    (one image's are shared by all its rows as they are)."""
    if s == 1 or len(next(iter(fwd.values()))) == 1:
        return fwd
    dynamic = set(projector._dynamic_needed)
    return {k: (np.repeat(v, s, axis=0) if k in dynamic else v) for k, v in fwd.items()}


def upsampled(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Raw maps [..., h, w] scaled to [0, 1] and upsampled (bilinear, half-pixel) to the input as
    ``pytorch_grad_cam``'s ``cam(x, targets)`` returns them: scaled, resized, scaled again (its
    scale_cam_image per layer, then once more after averaging the layers)."""
    flat = maps.reshape(-1, *maps.shape[-2:]).astype(np.float32)
    return _scaled(upsample(_scaled(flat), size)).reshape(*maps.shape[:-2], *size)


def _scaled(flat: np.ndarray) -> np.ndarray:
    """Each map [h, w] of [R, h, w] minus its minimum, over its range (+1e-7), as scale_cam_image."""
    lo = flat.min(axis=(1, 2), keepdims=True)
    hi = flat.max(axis=(1, 2), keepdims=True)
    return (flat - lo) / (np.float32(1e-7) + hi - lo)
