"""Feature visualisation by optimisation (Erhan et al. 2009; Olah et al. 2017), as Lucent's
``render_vis`` does it: gradient ascent with Adam on an FFT-parametrised, colour-decorrelated image
(:mod:`cnncli.engine.dream_param`) seen through random transforms (:mod:`cnncli.engine.dream_transforms`),
normalised as the model's images are and resized to its input. The forward pass and the gradient
at the model input are onnxruntime runs of the model and of its generated backprop reverse graph
(:class:`cnncli.engine.project.Projector`); everything else is numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from cnncli.engine.dream_param import FFTImage
from cnncli.engine.dream_transforms import Chain, IDENTITY, draw
from cnncli.engine.project import Projector
from cnncli.errors import CnnError


def centre(shape: tuple) -> tuple[int, ...]:
    """The centre unit as lucent.optvis.objectives_util._extract_act_pos picks it: row shape[3] // 2,
    column shape[2] // 2 (the bottom-right one of the centre 2×2 for even sizes); () for 2-D."""
    return (shape[3] // 2, shape[2] // 2) if len(shape) == 4 else ()


def objective(act: np.ndarray, channels: list[int | None], kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(value per row, d value / d act): row i's objective on ``act[i]`` (what Lucent's objectives
    return, negated: it minimises their negative). channel: the mean of channel c's map; neuron:
    its centre unit; layer: the mean of the squared layer (Lucid's ``deepdream``)."""
    values = np.zeros(len(channels), dtype=np.float64)
    seeds = np.zeros_like(act, dtype=np.float32)
    for i, c in enumerate(channels):
        if kind == "layer":
            values[i] = float(np.mean(np.square(act[i], dtype=np.float64)))
            seeds[i] = 2.0 * act[i] / act[i].size
        elif kind == "neuron":
            pos = (i, c, *centre(act.shape))
            values[i] = float(act[pos])
            seeds[pos] = 1.0
        else:
            plane = act[i, c]
            values[i] = float(np.mean(plane, dtype=np.float64))
            seeds[i, c] = 1.0 / max(plane.size, 1)
    return values, seeds


@dataclass
class Adam:
    """torch.optim.Adam's update (betas 0.9, 0.999; eps 1e-8; no weight decay), minimising."""

    lr: float
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self) -> None:
        self.t, self.m, self.v = 0, None, None

    def step(self, p: np.ndarray, grad: np.ndarray) -> np.ndarray:
        if self.m is None:
            self.m, self.v = np.zeros_like(p), np.zeros_like(p)
        self.t += 1
        self.m += (1 - self.beta1) * (grad - self.m)
        self.v = self.beta2 * self.v + (1 - self.beta2) * grad * grad
        bc1, bc2 = 1 - self.beta1 ** self.t, 1 - self.beta2 ** self.t
        denom = np.sqrt(self.v) / np.sqrt(bc2) + self.eps
        return p - (self.lr / bc1) * self.m / denom


@dataclass
class Normalise:
    """The model's preprocessing of a [0, 1] RGB image: x[c] = gain[c] · img[source[c]] + offset[c]
    (pixels 0–255 times the preset's scale, channels flipped for BGR, minus mean, over std)."""

    gain: np.ndarray
    offset: np.ndarray
    source: np.ndarray  # image channel read by each model channel

    @classmethod
    def of(cls, prep, channels: int) -> "Normalise":
        std, mean = np.asarray(prep.std, np.float32), np.asarray(prep.mean, np.float32)
        source = np.arange(channels)[::-1].copy() if prep.bgr else np.arange(channels)
        return cls((255.0 * prep.scale / std).astype(np.float32), (-mean / std).astype(np.float32), source)

    def forward(self, img: np.ndarray) -> np.ndarray:
        return img[:, self.source] * self.gain[:, None, None].astype(img.dtype) + self.offset[:, None, None].astype(img.dtype)

    def transpose(self, g: np.ndarray) -> np.ndarray:
        out = np.empty_like(g)
        out[:, self.source] = g * self.gain[:, None, None].astype(g.dtype)
        return out


@dataclass
class Dreamed:
    """The images of one batch: ``images`` float32 [B, C, h, w] in [0, 1] (RGB), the objective on
    the untransformed image (resized to the model input) before and after, and ``history``
    [steps, B]: the objective at each step, on that step's transformed image."""

    channels: list[int | None]
    images: np.ndarray
    start: np.ndarray
    end: np.ndarray
    history: np.ndarray


def to_pixels(image: np.ndarray) -> np.ndarray:
    """One optimised image [C, h, w] in [0, 1] as uint8 [h, w, 3] (grey for 1 channel; the first
    three of 4)."""
    img = np.clip(np.round(np.asarray(image, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8).transpose(1, 2, 0)
    return np.repeat(img, 3, axis=2) if img.shape[2] == 1 else np.ascontiguousarray(img[:, :, :3])


def montage(pictures: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """The pictures in rows of ⌈√N⌉ on white, each at its own size."""
    from cnncli.imaging.pictures import grid

    cols = max(1, math.ceil(math.sqrt(len(pictures))))
    return grid(pictures, cols, max(max(p.shape[:2]) for p in pictures), gap=gap, bg=255)


def single_threaded_blas():
    """numpy's BLAS on one thread while onnxruntime's threads run: on small products (the
    transforms, ~140×140) BLAS threads beside onnxruntime's take the cores from each other
    (5–10× slower on 2 cores)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


class Dreamer:
    """Optimise images for units of ``target`` (a tensor of ``model``, fed at ``input_name``)."""

    def __init__(self, model, graph, input_name: str, target: str, input_shape: tuple, prep,
                 provider: str = "cpu", verbose: bool = False):
        self.projector = Projector(model, graph, input_name, target, "backprop", provider, verbose, max_batch=1 << 30)
        self.target, self.channels_in = target, input_shape[1]
        self.model_size = (input_shape[2], input_shape[3])
        self.normalise = Normalise.of(prep, input_shape[1])

    def _value_and_grad(self, img: np.ndarray, chain: Chain, channels: list, kind: str, grad: bool = True):
        x = self.normalise.forward(chain.forward(img))
        fwd = self.projector.forward(np.ascontiguousarray(x, dtype=np.float32))
        values, seeds = objective(fwd[self.target], channels, kind)
        if not grad:
            return values, None
        gx = self.projector.run_reverse(seeds, fwd, paired=True)
        return values, chain.transpose(self.normalise.transpose(gx))

    def evaluate(self, images: np.ndarray, channels: list, kind: str) -> np.ndarray:
        """The objective of each image as a picture: untransformed, resized to the model input."""
        chain = Chain(images.shape[2:], IDENTITY, self.model_size, standard=False)
        return self._value_and_grad(images, chain, channels, kind, grad=False)[0]

    def dream(self, channels: list[int | None], kind: str, size: tuple[int, int], steps: int, lr: float, seed: int,
              tick: Callable[[int], None] | None = None, transforms: bool = True) -> Dreamed:
        """``steps`` Adam steps of ``lr`` on one image per entry of ``channels`` (None: the layer
        objective). Image i starts from its own draw (seeded by ``seed`` and its channel), the
        transforms of each step are drawn from ``RandomState(seed)``, shared by the batch."""
        with single_threaded_blas():  # numpy's small products beside onnxruntime's threads
            return self._dream(channels, kind, size, steps, lr, seed, tick, transforms)

    def _dream(self, channels, kind, size, steps, lr, seed, tick, transforms) -> Dreamed:
        param = FFTImage(len(channels), self.channels_in, size[0], size[1])
        spectrum = param.init([(seed, 0 if c is None else c + 1) for c in channels])
        rng = np.random.RandomState(seed)
        adam = Adam(lr)
        start = self.evaluate(param.image(spectrum), channels, kind)
        history = np.zeros((steps, len(channels)))
        for step in range(steps):
            d = draw(rng)
            chain = Chain(size, d, self.model_size, standard=transforms)
            img = param.image(spectrum)
            values, g_img = self._value_and_grad(img, chain, channels, kind)
            history[step] = values
            spectrum = adam.step(spectrum, -param.backward(img, g_img))  # Adam minimises -objective
            if not np.isfinite(spectrum).all():  # a huge --lr: say so rather than write a NaN picture
                raise CnnError(f"the optimisation diverged at step {step + 1} (values no longer finite): "
                               f"try a smaller --lr than {lr:g}")
            if tick:
                tick(1)
        images = param.image(spectrum)
        return Dreamed(list(channels), images, start, self.evaluate(images, channels, kind), history)
