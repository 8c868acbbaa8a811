"""The image `cnn dream` optimises, parametrised as Lucent does it
(``lucent.optvis.param.image(w, h, fft=True, decorrelate=True)``), in numpy, with its exact adjoint.

The parameters are a spectrum (real and imaginary parts, ``[B, C, h, w//2 + 1 (+1 for odd w), 2]``,
drawn N(0, 0.01²)), scaled by 1/max(|f|, 1/max(h, w)) (a 1/f decay); the image is its inverse
real FFT (norm "ortho") divided by 4 (Lucid's "magic" constant), its colours mixed by Lucid's
colour-correlation matrix (3 channels only: ``decorrelate``), then squashed to [0, 1] by a sigmoid.
:meth:`FFTImage.backward` is the transpose of that chain's Jacobian: the gradient of any function
of the image with respect to the spectrum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# lucent.optvis.param.color: the square root of the colour covariance's SVD (ImageNet), each
# column scaled by the largest column norm
COLOR_CORRELATION_SVD_SQRT = np.asarray([[0.26, 0.09, 0.02],
                                         [0.27, 0.00, -0.05],
                                         [0.27, -0.09, 0.03]], dtype=np.float32)
COLOR_CORRELATION = COLOR_CORRELATION_SVD_SQRT / np.max(np.linalg.norm(COLOR_CORRELATION_SVD_SQRT, axis=0))
MAGIC = 4.0  # lucent.optvis.param.spatial.fft_image: "increasing this seems to reduce saturation"
INIT_SD = 0.01


def rfft2d_freqs(h: int, w: int) -> np.ndarray:
    """The 2-D spectrum's frequencies |f|, [h, w//2 + 1] (one more column for an odd w), as Lucid."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[: w // 2 + (2 if w % 2 == 1 else 1)]
    return np.sqrt(fx * fx + fy * fy)


@dataclass
class FFTImage:
    """``batch`` images of ``channels`` × ``h`` × ``w``; ``decorrelate`` mixes 3 channels' colours."""

    batch: int
    channels: int
    h: int
    w: int
    decorrelate: bool = True
    decay_power: float = 1.0

    def __post_init__(self) -> None:
        freqs = rfft2d_freqs(self.h, self.w)
        self.shape = (self.batch, self.channels, *freqs.shape, 2)
        self.scale = (1.0 / np.maximum(freqs, 1.0 / max(self.w, self.h)) ** self.decay_power).astype(np.float32)
        self.decorrelate = self.decorrelate and self.channels == 3
        used = self.w // 2 + 1  # the inverse real FFT reads these columns (an odd w's extra one is cut off)
        weight = np.full(freqs.shape[1], 2.0, dtype=np.float32)  # a column stands for itself and its mirror
        weight[0] = 1.0
        if self.w % 2 == 0:
            weight[used - 1] = 1.0  # the Nyquist column has no mirror
        weight[used:] = 0.0
        self._column_weight = weight

    def init(self, seeds: list[int | tuple]) -> np.ndarray:
        """The starting spectrum: one N(0, 0.01²) draw per image, each from its own seed (so an
        image starts the same whichever others share its batch)."""
        rows = [np.random.default_rng(s).standard_normal(self.shape[1:]) * INIT_SD for s in seeds]
        return np.stack(rows).astype(np.float32)

    def _spatial(self, spectrum: np.ndarray) -> np.ndarray:
        scaled = spectrum * self.scale[..., None]
        complex_spectrum = scaled[..., 0] + 1j * scaled[..., 1]
        return np.fft.irfft2(complex_spectrum, s=(self.h, self.w), norm="ortho").astype(spectrum.dtype) / MAGIC

    def image(self, spectrum: np.ndarray) -> np.ndarray:
        """The image in [0, 1], [B, C, h, w], of the same float type as ``spectrum``."""
        t = self._spatial(spectrum)
        if self.decorrelate:
            t = np.einsum("dc,bchw->bdhw", COLOR_CORRELATION.astype(t.dtype), t)
        return 1.0 / (1.0 + np.exp(-t))

    def backward(self, image: np.ndarray, grad: np.ndarray) -> np.ndarray:
        """d(loss)/d(spectrum) given ``image`` (what :meth:`image` returned) and d(loss)/d(image)."""
        g = grad * image * (1.0 - image)  # the sigmoid
        if self.decorrelate:
            g = np.einsum("dc,bdhw->bchw", COLOR_CORRELATION.astype(g.dtype), g)
        g = g / MAGIC
        # the inverse real FFT's transpose: the forward real FFT (both "ortho"), each column counted
        # once per half-spectrum entry it stands for; imaginary parts the inverse ignores get 0
        spec = np.fft.rfft2(g, norm="ortho")
        cols = self.shape[3]
        if spec.shape[-1] < cols:
            spec = np.concatenate([spec, np.zeros((*spec.shape[:-1], cols - spec.shape[-1]), spec.dtype)], axis=-1)
        spec = spec * self._column_weight * self.scale
        return np.stack([spec.real, spec.imag], axis=-1).astype(grad.dtype)
