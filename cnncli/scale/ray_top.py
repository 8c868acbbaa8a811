"""The scan of `cnn top --engine ray` as a Ray Data pipeline.

    image paths (listed on the driver by the local engine's `iter_image_paths`, numbered in order;
    a list file or stdin may also name URIs: s3://, gs://, file://, … read through pyarrow)
      → blocks of (number, path) in Ray's object store
      → decode tasks: `read_image`, the local engine's decoder (uint8 pixels travel, 4× smaller
        than the float tensors); an unreadable image is flagged, not fatal
      → an actor pool (`workers` actors, one onnxruntime session each, CPU or one GPU per actor):
        `to_tensor`, forward pass, `channel_maxima` and `TopK.offer`, the local engine's code, give
        one top-k per block; activation maps never leave the actor
      → the driver folds the blocks' top-k lists together with `merge` (associative: the result
        is the local engine's, whatever the partitioning) and counts scanned and skipped images.

The driver holds the global top-k (k × channels), one object reference per block of paths and the
skipped paths; the projection of the kept units then runs on the driver as in the local engine.
Ray is imported only in this folder (the runtime in `runtime.py`, URIs in `reading.py`), and only when
`--engine ray` is asked for.
"""

from __future__ import annotations

import itertools
import logging
import warnings
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np

from cnncli.errors import BadArgument, CnnError
from cnncli.imaging.preprocess import Preprocess
from cnncli.engine.top import ScanResult, TopK, batched
from cnncli.scale.reading import read_pixels
from cnncli.scale.runtime import RayRuntime, first_line

# Fault tolerance, for worker processes that die (killed, out of memory, node lost): a decode
# task is retried up to DECODE_RETRIES times; a model actor is restarted up to MAX_RESTARTS times
# and the block it held resubmitted up to MAX_TASK_RETRIES times. After that the run fails with
# an error (exit 1) and writes nothing. Ray Data's own defaults are unbounded, which lets a crash
# loop hang the run; Ray 2.60 marks these per-operator settings deprecated (the warning is
# silenced: the version is pinned).
DECODE_RETRIES = 3
MAX_RESTARTS = 3
MAX_TASK_RETRIES = 3


@dataclass(frozen=True)
class ScanSpec:
    """What each actor needs to turn a block of decoded images into a block top-k."""

    input_name: str
    target: str
    channels: tuple[int, ...]
    k: int
    batch_size: int  # images per forward run, as in the local engine
    prep: Preprocess
    provider: str  # "cpu" or "cuda"
    threads: int  # onnxruntime intra-op threads per actor


@dataclass(frozen=True)
class Placement:
    workers: int
    provider: str
    cpus_per_actor: float
    gpus_per_actor: float
    threads: int


def numbered_blocks(paths: Iterable[str], batch_size: int, workers: int) -> Iterator[tuple[int, list[str]]]:
    """(number of the first image, paths) per pipeline block. A block holds 8 forward runs (so its
    top-k, k × channels entries, is much smaller than its per-image maxima), capped at 1024 images;
    a short list (under 4 full blocks per worker, read ahead to know) is cut into 4 blocks per
    worker so that every actor gets work."""
    size = int(min(1024, max(32, 8 * batch_size)))
    it = iter(paths)
    head = list(itertools.islice(it, 4 * workers * size))
    if len(head) < 4 * workers * size:
        size = max(1, -(-len(head) // (4 * workers)))
    n = 0
    for chunk in batched(itertools.chain(head, it), size):
        yield n, chunk
        n += len(chunk)


def plan(resources: dict, workers: int | None, provider: str) -> Placement:
    """Actors and their resources on the cluster at hand. CPU actors share half the cluster's CPUs
    (fractions allowed), leaving the rest to the decode tasks: on 2 CPUs, 2 actors of one CPU each
    would starve the decode tasks and the pipeline would never finish. GPU actors take one GPU each."""
    cpus, gpus = float(resources.get("CPU", 1)), int(resources.get("GPU", 0))
    if provider == "auto":
        provider = "cuda" if gpus else "cpu"
    if provider == "cuda" and not gpus:
        raise CnnError("--provider cuda: the Ray cluster has no GPU")
    if workers is None:
        workers = gpus if provider == "cuda" else max(1, int(cpus) // 4)
    if provider == "cuda" and workers > gpus:
        raise CnnError(f"--workers {workers} with --provider cuda: the Ray cluster has {gpus} GPU(s), one per worker")
    share = round(max(0.05, min(cpus / 2 / workers, 16.0)), 2)
    if provider == "cuda":
        return Placement(workers, provider, min(1.0, share), 1.0, 1)
    return Placement(workers, provider, share, 0.0, max(1, int(share)))


def decode_block(batch: dict, image_channels: int, size: tuple[int, int]) -> dict:
    """Decode a block of paths with the local engine's reader; unreadable images get ok=False."""
    paths = [str(p) for p in batch["path"]]
    pixels = np.zeros((len(paths), size[0], size[1], image_channels), dtype=np.uint8)
    ok = np.zeros(len(paths), dtype=bool)
    for i, path in enumerate(paths):
        try:
            pixels[i] = read_pixels(path, image_channels, size)
            ok[i] = True
        except Exception:  # as in the local engine: skipped and reported, never ends a long scan
            pass
    return {"id": np.asarray(batch["id"], dtype=np.int64), "path": np.asarray(paths, dtype=object),
            "ok": ok, "pixels": pixels}


class BlockTopK:
    """A Ray Data actor: one onnxruntime session; a block of decoded images → that block's top-k."""

    def __init__(self, model_ref: list, spec: ScanSpec):
        import ray

        from cnncli.runtime.sessions import make_session

        self.spec = spec
        self.chans = np.asarray(spec.channels)
        self.session = make_session(ray.get(model_ref[0]), spec.provider, threads=spec.threads)

    def __call__(self, batch: dict) -> dict:
        from cnncli.imaging.preprocess import to_tensor
        from cnncli.scale.merge import to_record
        from cnncli.engine.top import channel_maxima

        spec = self.spec
        ids, paths, ok, pixels = batch["id"], batch["path"], batch["ok"], batch["pixels"]
        top = TopK(len(spec.channels), spec.k)
        good = np.flatnonzero(ok)
        for start in range(0, len(good), spec.batch_size):
            chunk = good[start:start + spec.batch_size]
            x = np.concatenate([to_tensor(pixels[i], spec.prep) for i in chunk], axis=0)
            act = self.session.run([spec.target], {spec.input_name: x})[0]
            maxima, locs = channel_maxima(act, self.chans)
            top.offer(maxima, locs, np.asarray(ids[chunk], dtype=np.int64), [str(paths[i]) for i in chunk])
        import json

        skipped = [[int(ids[i]), str(paths[i])] for i in np.flatnonzero(~ok)]
        return {**to_record(top), "scanned": np.array([len(good)]),
                "skipped": np.array([json.dumps(skipped)], dtype=object)}


def ray_scan(model_bytes: bytes, input_name: str, target: str, image_shape: tuple[int, int, int],
             prep: Preprocess, paths: Iterable[str], channels: list[int], k: int, batch_size: int,
             provider: str = "auto", workers: int | None = None, address: str | None = None,
             verbose: bool = False, tick: Callable[[int], None] | None = None) -> ScanResult:
    """The local `cnncli.engine.top.scan` on Ray Data: the same ScanResult (top k per channel, number of
    images scanned, unreadable paths in listing order). ``image_shape`` = (C, H, W) of the input."""
    if workers is not None and workers < 1:
        raise BadArgument("--workers", "must be at least 1")
    with warnings.catch_warnings():
        if not verbose:  # Ray's notes on its own settings (DataContext deprecations) are not the user's
            warnings.simplefilter("ignore")
        return _ray_scan(model_bytes, input_name, target, image_shape, prep, paths, channels, k, batch_size,
                         provider, workers, address, verbose, tick)


def _ray_scan(model_bytes, input_name, target, image_shape, prep, paths, channels, k, batch_size, provider,
              workers, address, verbose, tick) -> ScanResult:
    with RayRuntime(address, verbose) as ray:
        import pyarrow as pa

        place = plan(ray.cluster_resources(), workers, provider)
        spec = ScanSpec(input_name, target, tuple(channels), k, batch_size, prep, place.provider, place.threads)
        refs = [ray.put(pa.table({"id": pa.array(np.arange(n, n + len(chunk)), pa.int64()),
                                  "path": pa.array(chunk, pa.string())}))
                for n, chunk in numbered_blocks(paths, batch_size, place.workers)]
        if not refs:
            return ScanResult(TopK(len(channels), k), 0, [])
        args = (refs, [ray.put(model_bytes)], spec, place, tuple(image_shape), verbose)
        try:
            if not _client_mode():
                return scan_blocks(*args, tick=tick)
            # Ray Client (ray://): Ray Data 2.60 cannot execute from a client process (its executor
            # needs the driver's core worker), so the pipeline runs in one task on the cluster and
            # the progress line ticks once, at the end.
            result = ray.get(ray.remote(num_cpus=0, max_retries=0)(scan_blocks).remote(*args))
            if tick:
                tick(result.scanned + len(result.skipped))
            return result
        except CnnError:
            raise
        except Exception as exc:
            raise _user_error(exc) from None


def scan_blocks(refs: list, model_ref: list, spec: ScanSpec, place: Placement, image_shape: tuple[int, int, int],
                verbose: bool, tick: Callable[[int], None] | None = None) -> ScanResult:
    """Build and run the pipeline over the blocks of paths in ``refs`` (on the driver, or in a task)."""
    import ray

    ds = ray.data.from_arrow_refs(refs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # RayDeprecationWarning: max_retries, …
        ds = ds.map_batches(decode_block, batch_size=None, batch_format="numpy", zero_copy_batch=True,
                            fn_kwargs={"image_channels": image_shape[0], "size": tuple(image_shape[1:])},
                            num_cpus=1, max_retries=DECODE_RETRIES)
        ds = ds.map_batches(BlockTopK, batch_size=None, batch_format="numpy", zero_copy_batch=True,
                            compute=ray.data.ActorPoolStrategy(size=place.workers),
                            fn_constructor_args=(model_ref, spec),
                            num_cpus=place.cpus_per_actor, num_gpus=place.gpus_per_actor or None,
                            max_restarts=MAX_RESTARTS, max_task_retries=MAX_TASK_RETRIES)
    with warnings.catch_warnings():
        if not verbose:  # e.g. "won't fully utilize the available concurrency"
            warnings.simplefilter("ignore")
        quiet_data(verbose)
        return collect(ds, TopK(len(spec.channels), spec.k), tick)


def _client_mode() -> bool:
    try:
        from ray.util.client import ray as client

        return bool(client.is_connected())
    except Exception:
        return False


def collect(ds, top: TopK, tick: Callable[[int], None] | None) -> ScanResult:
    """Run the pipeline: fold each block's top-k into ``top``, count, tick the progress line."""
    import json

    from cnncli.scale.merge import from_record, merge

    scanned, skipped = 0, []
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for i in range(len(batch["scanned"])):
            top = merge(top, from_record(batch["values"][i], batch["ids"][i], batch["locs"][i], batch["paths"][i]))
            bad = json.loads(batch["skipped"][i])
            skipped.extend(bad)
            scanned += int(batch["scanned"][i])
            if tick:
                tick(int(batch["scanned"][i]) + len(bad))
    skipped.sort()  # by image number: the listing order, as the local engine reports them
    return ScanResult(top, scanned, [p for _, p in skipped])


def quiet_data(verbose: bool) -> None:
    """Ray Data's own progress bars and log lines off, unless ``verbose``."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = verbose
    ctx.print_on_execution_start = verbose
    ctx.enable_auto_log_stats = False
    if not verbose:
        logging.getLogger("ray.data").setLevel(logging.ERROR)


def _user_error(exc: BaseException) -> CnnError:
    """A failure inside the pipeline as one line: our own error (e.g. onnxruntime cannot load the
    model on a worker) if one is the cause, else Ray's."""
    seen, cur = set(), exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if type(cur).__module__.startswith("cnncli") and isinstance(cur, CnnError):
            return CnnError(str(cur))
        cur = getattr(cur, "cause", None) or cur.__cause__
    return CnnError(f"the Ray pipeline failed: {first_line(exc)}")
