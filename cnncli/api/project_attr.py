"""`cnn project --smooth N` / `--integrated N`: attributions at the pixels (SmoothGrad, integrated
gradients) through the backprop reverse graph (cnncli.engine.attributions), for the projection
job cnncli.api.project prepares: its options' checks, the row, the file-name tag, the baseline
and the stream of results that job yields instead of projections.

This module stays light at import (the CLI reads ProjectOptions' defaults).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Iterator

from cnncli.columns import col
from cnncli.errors import BadArgument

BASELINES = ("black", "blur")  # or a file: an image or a .npy shaped like the model input
COMPLETENESS_WARN = 0.05  # warn when |Σ attr − (f(x) − f(b))| exceeds this share of |f(x) − f(b)|


def fraction(flag_: str, value: Any) -> float | None:
    """A finite number above 0 and at most 10 (SmoothGrad's σ as a share of the input's range), or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
        raise BadArgument(flag_, f"expected a number, not {type(value).__name__}")
    try:
        v = float(value)
    except ValueError:
        raise BadArgument(flag_, f"'{value}' is not a number") from None
    if not math.isfinite(v) or not 0 < v <= 10:
        raise BadArgument(flag_, f"{value} is out of range: give a share of the input's range above 0 and at most 10")
    return v


def check(o) -> None:
    """The rules between ProjectOptions' attribution fields and the rest (ProjectOptions.validate)."""
    if o.smooth is not None and o.integrated is not None:
        raise BadArgument("--smooth", "give --smooth N or --integrated N, not both")
    method = "--smooth" if o.smooth is not None else "--integrated" if o.integrated is not None else None
    if method is None:
        for name, flag_, goes in (("noise", "--noise", "--smooth"), ("baseline", "--baseline", "--integrated"),
                                  ("ig_method", "--ig-method", "--integrated")):
            if getattr(o, name) is not None:
                raise BadArgument(flag_, f"{flag_} goes with {goes} N")
        return
    if o.mode != "backprop":
        raise BadArgument(method, f"{method} averages gradients: give --mode backprop (not {o.mode})")
    if o.keep != "map":
        raise BadArgument("--keep", f"--keep {o.keep} does not apply to {method} (the score is the whole channel)")
    if o.smooth is not None and (o.baseline is not None or o.ig_method is not None):
        raise BadArgument("--baseline" if o.baseline is not None else "--ig-method", "goes with --integrated N, not --smooth")
    if o.integrated is not None and o.noise is not None:
        raise BadArgument("--noise", "goes with --smooth N, not --integrated")
    if o.integrated is not None and (o.ig_method or "gausslegendre") != "gausslegendre" and o.integrated < 2:
        raise BadArgument("--integrated", f"{o.ig_method} takes at least 2 steps")


@dataclass(frozen=True)
class AttributionRow:
    channel: int = col("channel", "int")
    method: str = col("method")
    samples: int = col("samples", "int")  # noisy copies, or points on the path
    score: float = col("score")  # f(x): the channel's value (summed over space for a map)
    baseline_score: float | None = col("baseline score")  # f(baseline), integrated gradients
    attribution_sum: float | None = col("Σ attribution")
    completeness_error: float | None = col("completeness error")  # |Σ attr − (f(x) − f(baseline))|
    files: dict = col("files", "files")

    @property
    def max_activation(self) -> float:
        """The score, where a ProjectionRow's reader (the contact sheet) labels a channel."""
        return self.score


def tag(o) -> str:
    """The file-name part of the options that change an attribution's pixels ('' for none)."""
    from cnncli.imaging.naming import short_hash, slug

    if o.smooth is not None:
        return f"smooth{o.smooth}-noise{o.noise if o.noise is not None else SMOOTH_NOISE:g}-seed{o.seed}"
    if o.integrated is not None:
        base = o.baseline or "black"
        base = base if base in BASELINES else f"file{short_hash(base, 6)}"
        return slug(f"ig{o.integrated}-{base}-{o.ig_method or 'gausslegendre'}")
    return ""


SMOOTH_NOISE = 0.15  # --noise's default: σ = 15 % of the input's range (Smilkov et al. suggest 10–20 %)


def baseline_array(job) -> Any:
    """The baseline of integrated gradients for the job's input: a black picture preprocessed as the
    input (zeros for a tensor used as it is), the input blurred (RISE's Gaussian, σ 5), or a file
    (a picture preprocessed as the input, or a .npy used as it is)."""
    import numpy as np

    from cnncli.api.sources import prepare_image

    o, x, m = job.options, job.image.x, job.model
    which = o.baseline or "black"
    if which == "black":
        if job.image.prep is None:
            return np.zeros_like(x)
        from cnncli.imaging.preprocess import to_tensor

        return to_tensor(np.zeros((x.shape[2], x.shape[3], x.shape[1]), dtype=np.uint8), job.image.prep)
    if which == "blur":
        from cnncli.engine.cam_metrics import blur

        return blur(x[0])[None]
    if which.lower().endswith(".npy"):
        from cnncli.imaging.preprocess import check_input_shape, read_npy

        b = read_npy(which)
        check_input_shape(which, tuple(b.shape), tuple(x.shape))
        if not np.isfinite(b).all():
            raise BadArgument("--baseline", f"'{which}' holds NaN or infinite values")
        return np.ascontiguousarray(b, dtype=np.float32)
    return prepare_image(m, which, None, o.preset, o.mean, o.std, o.bgr).x


def batch_rows(job, samples: int) -> int:
    """Inputs per forward and reverse run: --batch-size, or as many of the samples as fit
    ATTRIBUTION_BUDGET (at most 64) by the memory estimate, and the memory available or --max-memory."""
    from cnncli.engine.memory import available_memory, run_estimate

    o, m = job.options, job.model
    rows = min(samples, o.batch_size if o.batch_size is not None else 64)
    if o.batch_size is None or o.max_memory is not None:
        limit = o.max_memory if o.max_memory is not None else available_memory()
        limit = ATTRIBUTION_BUDGET if limit is None else min(limit, ATTRIBUTION_BUDGET)
        while rows > 1 and run_estimate(m.graph, m.input_name, job.target.tensor, rows, rows) > limit:
            rows = (rows + 1) // 2
    return rows


ATTRIBUTION_BUDGET = 1 << 30  # bytes a batch of --smooth/--integrated inputs may take by the estimate


def attributions(job) -> Iterator[tuple[int, float, list | None, Any, dict]]:
    """(channel, score, location, array [C, H, W], the row's figures) for each channel of the job."""
    import warnings

    import numpy as np

    from cnncli.engine.attributions import Attributor, smooth_noise
    from cnncli.errors import CnnWarning

    from cnncli.engine.memory import check_memory

    o, x, proj = job.options, job.image.x, job.projector
    samples = o.smooth if o.smooth is not None else o.integrated
    check_memory(3 * samples * x.nbytes, o.max_memory, f"{samples} inputs of {x.nbytes:,} bytes (--smooth/--integrated)",
                 "fewer samples")  # the noise or path points, the inputs and the weighted sums
    attributor = Attributor(proj, job.model.batchable, batch_rows(job, samples))
    channels = job.channels
    if channels == "top":
        channels = proj.choose(proj.forward(x)[proj.target], "top", job.top)
    if o.smooth is not None:
        frac = o.noise if o.noise is not None else SMOOTH_NOISE
        noise = smooth_noise(x, o.smooth, frac, o.seed)
        job.meta["attribution"] = {"method": "smoothgrad", "samples": o.smooth, "noise": frac,
                                   "sigma": frac * float(x.max() - x.min()), "seed": o.seed}
        results = attributor.smoothgrad(x, channels, noise)
    else:
        method = o.ig_method or "gausslegendre"
        base = baseline_array(job)
        job.meta["attribution"] = {"method": "integrated_gradients", "steps": o.integrated,
                                   "baseline": o.baseline or "black", "ig_method": method}
        results = attributor.integrated(x, base, channels, o.integrated, method)
    name = job.meta["attribution"]["method"]
    for a in results:
        err = a.completeness_error
        if err is not None and err > COMPLETENESS_WARN * abs(a.score - a.baseline_score) + 1e-6:
            warnings.warn(CnnWarning(
                f"channel {a.channel}: integrated gradients' completeness error {err:.4g} is "
                f"{err / max(abs(a.score - a.baseline_score), 1e-30):.1%} of f(x) − f(baseline) = "
                f"{a.score - a.baseline_score:.4g}; more steps (--integrated) bring it down"), stacklevel=2)
        figures = {"method": name, "samples": samples, "score": a.score, "baseline_score": a.baseline_score,
                   "attribution_sum": a.total, "completeness_error": err}
        yield a.channel, a.score, None, np.asarray(a.array, dtype=np.float32), figures
