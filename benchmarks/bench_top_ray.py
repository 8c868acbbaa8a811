"""`cnn top --engine ray` (cnncli.scale.ray_top) against the local scan, and the driver's memory.

1. Throughput, images/s of the scan phase (what differs between the engines; the projection of
   the k × channels kept units afterwards is the same code on the driver): the local engine
   (cnncli.engine.top.scan, one onnxruntime session with all cores) and Ray Data with 1 and 2 actors on
   an embedded 2-CPU runtime, on bench_top.py's JPEGs (256x256 → 224x224) and ZF-style network
   cut at conv5 (16 channels, k 9, batch 16). Ray's wall time includes starting the actor pool
   (the runtime itself is started once, and timed apart); "steady" is the rate after the first
   block came back. Also the per-image costs the ImageNet estimate is built from: decode +
   resize + normalise, and the forward pass on one thread.
2. The driver's memory with 10,000 and 100,000 images (a tiny 32x32 model, so the run takes
   minutes, not hours): one fresh process per count, peak RSS (VmHWM) and RSS before the scan.
   The images are 1,000 distinct 32x32 PNGs behind 100,000 hard links (distinct paths, one inode
   each per original), listed in a text file that the driver streams.

    python benchmarks/bench_top_ray.py                       # both, 3 runs per rate
    python benchmarks/bench_top_ray.py --only rate --runs 5 --images 400
    python benchmarks/bench_top_ray.py --only memory --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cnncli.engine.top import TopK

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_project import ensure_zf, machine_info  # noqa: E402
from bench_top import Setup, do_scan, ensure_images  # noqa: E402

LAYER = 5


def start_ray(cpus: int = 2):
    import logging

    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    return ray, time.perf_counter() - t0


def ray_run(s: Setup, paths: list[str], channels: list[int], batch: int, workers: int, k: int = 9) -> dict:
    from cnncli.engine.project import forward_model
    from cnncli.scale.ray_top import ray_scan

    cut = forward_model(s.m.model, [s.target.tensor], {}, s.m.graph.types).SerializeToString()
    marks: list[tuple[float, int]] = []
    t0 = time.perf_counter()
    res = ray_scan(cut, s.m.input_name, s.target.tensor, tuple(s.m.shape[1:]), s.prep, paths, channels, k, batch,
                   "cpu", workers, None, False, lambda n: marks.append((time.perf_counter(), n)))
    end = time.perf_counter()
    assert res.scanned == len(paths), res.scanned
    first_t, first_n = marks[0]
    steady = (len(paths) - first_n) / (end - first_t) if end > first_t and len(paths) > first_n else float("nan")
    return {"wall": end - t0, "first_block_s": first_t - t0, "steady_ips": steady, "top": res.top}


def rates(n_images: int, runs: int, batch: int) -> dict:
    from cnncli.engine.project import forward_model
    from cnncli.runtime.sessions import make_session
    from cnncli.engine.top import batched

    paths = ensure_images()[:n_images]
    s = Setup(str(ensure_zf()), LAYER)
    n_ch = s.target.shape[1]
    chans = sorted(int(c) for c in np.random.default_rng(0).choice(n_ch, 16, replace=False))
    print(f"\n== scan throughput: {len(paths)} JPEGs 256x256 -> 224x224, ZF-style conv{LAYER} "
          f"({'x'.join(map(str, s.target.shape[1:]))}), 16 channels, k 9, batch {batch}, {runs} runs (median)")
    print(f"   load average before: {os.getloadavg()}")
    # per-image costs for the estimate: decode (+resize, normalise) and the forward pass on one thread
    one = make_session(forward_model(s.m.model, [s.target.tensor], {}, s.m.graph.types).SerializeToString(),
                       "cpu", threads=1)
    xs = [np.concatenate([s.load(p)[1] for p in chunk]) for chunk in batched(paths[:64], batch)]
    dec, fwd = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        for p in paths[:64]:
            s.load(p)
        dec.append((time.perf_counter() - t0) / 64)
        t0 = time.perf_counter()
        for x in xs:
            one.run([s.target.tensor], {s.m.input_name: x})
        fwd.append((time.perf_counter() - t0) / 64)
    per_image = {"decode_ms": 1e3 * statistics.median(dec), "forward_1thread_ms": 1e3 * statistics.median(fwd)}
    print(f"   per image: decode+resize+normalise {per_image['decode_ms']:.1f} ms, "
          f"forward (1 thread, batch {batch}) {per_image['forward_1thread_ms']:.1f} ms")

    ray, init_s = start_ray()
    print(f"   Ray runtime start (embedded, 2 CPUs): {init_s:.1f} s")
    do_scan(s, paths[:batch * 2], batch, chans)  # warm
    walls: dict[str, list[float]] = {"local": [], "ray1": [], "ray2": []}
    extra: dict[str, list[dict]] = {"ray1": [], "ray2": []}
    want = None
    try:
        for _ in range(runs):  # round-robin, so that a change in load hits all alike
            t0 = time.perf_counter()
            local = do_scan(s, paths, batch, chans)
            walls["local"].append(time.perf_counter() - t0)
            want = [local.top.entries(r) for r in range(len(chans))]
            for w in (1, 2):
                r = ray_run(s, paths, chans, batch, w)
                walls[f"ray{w}"].append(r["wall"])
                extra[f"ray{w}"].append(r)
                got = [r["top"].entries(i) for i in range(len(chans))]
                same = all([(p, l) for _, p, l in a] == [(p, l) for _, p, l in b] and
                           np.allclose([v for v, _, _ in a], [v for v, _, _ in b], rtol=0, atol=1e-6)
                           for a, b in zip(got, want))
                assert same, f"ray with {w} workers differs from the local engine"
    finally:
        ray.shutdown()
    out = {"images": len(paths), "batch": batch, "runs": runs, "ray_init_s": init_s, "per_image": per_image,
           "loadavg_after": os.getloadavg()}
    print(f"{'engine':18} {'wall s':>8} {'images/s':>9} {'first block s':>14} {'steady images/s':>16}")
    for key, label in (("local", "local (2 threads)"), ("ray1", "ray, 1 actor"), ("ray2", "ray, 2 actors")):
        wall = statistics.median(walls[key])
        row = {"wall_s": wall, "ips": len(paths) / wall, "walls": walls[key]}
        line = f"{label:18} {wall:8.2f} {len(paths) / wall:9.1f}"
        if key in extra:
            row["first_block_s"] = statistics.median(e["first_block_s"] for e in extra[key])
            row["steady_ips"] = statistics.median(e["steady_ips"] for e in extra[key])
            line += f" {row['first_block_s']:14.2f} {row['steady_ips']:16.1f}"
        out[key] = row
        print(line)
    print("   entries of both Ray runs equal to the local engine's (images, locations; activations to 1e-6)")
    print(f"   load average after: {out['loadavg_after']}")
    return out


# ----------------------------------------------------------------------------- driver merge


def merge_cost(runs: int) -> list[dict]:
    """The driver's work per block: decode the record (JSON paths) and merge it into the global
    top k (no Ray needed). Blocks of 128 images with distinct image numbers, random activations."""
    from cnncli.scale.merge import from_record, merge, to_record

    print("\n== driver merge per block (from_record + merge), k 9, blocks of 128 images")
    rows = []
    rng = np.random.default_rng(0)
    for channels in (16, 256, 2048):
        blocks = []
        for b in range(50):
            t = TopK(channels, 9)
            ids = np.arange(b * 128, (b + 1) * 128)
            t.offer(rng.random((128, channels), dtype=np.float32), rng.integers(0, 13, (128, channels, 2)), ids,
                    [f"/data/imagenet/val/n01440764/ILSVRC2012_val_{i:08d}.JPEG" for i in ids])
            rec = to_record(t)
            blocks.append((rec["values"][0], rec["ids"][0], rec["locs"][0], rec["paths"][0]))
        times = []
        for _ in range(runs):
            top = TopK(channels, 9)
            t0 = time.perf_counter()
            for rec in blocks:
                top = merge(top, from_record(*rec))
            times.append((time.perf_counter() - t0) / len(blocks))
        per = statistics.median(times)
        rows.append({"channels": channels, "per_block_ms": per * 1e3, "blocks_per_s": 1 / per})
        print(f"   {channels:5d} channels: {per * 1e3:7.2f} ms per block -> one driver core merges "
              f"{1 / per:7.0f} blocks/s = {128 / per:9.0f} images/s")
    return rows


# ----------------------------------------------------------------------------- memory


def tiny_model(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, s).astype(np.float32), n)
             for n, s in (("W1", (16, 3, 3, 3)), ("B1", (16,)), ("W2", (32, 16, 3, 3)), ("B2", (32,)))]
    nodes = [helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "W2", "B2"], ["c2"], kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c2"], ["r2"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
                              [helper.make_tensor_value_info("r2", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def make_links(root: Path, n: int, distinct: int = 1000) -> Path:
    """``distinct`` PNGs and ``n`` hard links to them in folders of 1,000; the list file of the links."""
    from PIL import Image

    rng = np.random.default_rng(1)
    src = root / "src"
    src.mkdir(parents=True)
    originals = []
    for i in range(distinct):
        p = src / f"o{i:04d}.png"
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(p)
        originals.append(p)
    listing = root / "list.txt"
    with open(listing, "w") as f:
        for i in range(n):
            d = root / "links" / f"d{i // 1000:03d}"
            if i % 1000 == 0:
                d.mkdir(parents=True)
            link = d / f"img{i:06d}.png"
            os.link(originals[i % distinct], link)
            f.write(f"{link}\n")
    return listing


def memory_child(model: str, listing: str, n: int, batch: int) -> dict:
    """In a fresh process: start Ray, scan the first n listed images, report the driver's memory."""
    import itertools

    from cnncli.imaging.sources import iter_image_paths
    from cnncli.engine.model_input import open_for_images
    from cnncli.frontend.load import load_model
    from cnncli.imaging.preprocess import make_preprocess
    from cnncli.engine.project import forward_model
    from cnncli.scale.ray_top import ray_scan
    from cnncli.engine.targets import by_layer

    def status(key: str) -> int:
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        return 0

    m = open_for_images(load_model(model))
    target = by_layer(m.graph, 2)
    prep = make_preprocess(3, None)
    cut = forward_model(m.model, [target.tensor], {}, m.graph.types).SerializeToString()
    ray, _ = start_ray()
    import pyarrow  # noqa: F401  (imported by the scan; counted in "before", not as growth)
    import ray.data  # noqa: F401

    before = status("VmRSS")
    t0 = time.perf_counter()
    res = ray_scan(cut, m.input_name, target.tensor, tuple(m.shape[1:]), prep,
                   itertools.islice(iter_image_paths(listing), n), list(range(target.shape[1])), 9, batch, "cpu", 1)
    wall = time.perf_counter() - t0
    after = status("VmRSS")
    peak = status("VmHWM")
    parts = {key: status(key) for key in ("RssAnon", "RssFile", "RssShmem")}  # after the scan
    ray.shutdown()
    assert res.scanned == n, res.scanned
    return {"images": n, "wall_s": wall, "ips": n / wall, "rss_before_scan": before, "rss_after_scan": after,
            "peak_rss": peak, "rss_parts_after": parts, "channels": int(target.shape[1]), "k": 9, "batch": batch}


def memory(counts: list[int], batch: int) -> list[dict]:
    print(f"\n== driver memory (tiny 32x32 model, all 32 channels of conv2, k 9, 1 actor, batch {batch} so"
          f" blocks of {8 * batch}; hard-linked PNGs)")
    print(f"   load average before: {os.getloadavg()}")
    root = Path(tempfile.mkdtemp(prefix="cnn_ray_mem_"))
    rows = []
    try:
        t0 = time.perf_counter()
        listing = make_links(root, max(counts))
        tiny_model(root / "tiny.onnx")
        print(f"   {max(counts):,} hard links to 1,000 PNGs made in {time.perf_counter() - t0:.1f} s")
        print(f"{'images':>8} {'wall s':>8} {'images/s':>9} {'RSS before scan':>16} {'RSS after':>10} {'peak RSS':>10}")
        for n in counts:
            code = (f"import json, sys; sys.path.insert(0, {str(HERE)!r}); from bench_top_ray import memory_child; "
                    f"print(json.dumps(memory_child({str(root / 'tiny.onnx')!r}, {str(listing)!r}, {n}, {batch})))")
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=3600)
            if out.returncode != 0:
                raise RuntimeError(out.stderr[-2000:])
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            mib = 1 << 20
            parts = ", ".join(f"{k} {v / mib:.0f}" for k, v in row["rss_parts_after"].items())
            print(f"{n:8,} {row['wall_s']:8.1f} {row['ips']:9.0f} {row['rss_before_scan'] / mib:12.0f} MiB"
                  f" {row['rss_after_scan'] / mib:6.0f} MiB {row['peak_rss'] / mib:6.0f} MiB   ({parts} MiB)")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"   load average after: {os.getloadavg()}")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=["rate", "merge", "memory"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--images", type=int, default=400, help="JPEGs for the throughput runs (at most 400)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--counts", default="10000,100000", help="image counts for the memory runs")
    ap.add_argument("--mem-batch", type=int, default=64, help="batch for the memory runs (blocks of 8 batches)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    result = {"machine": machine_info()}
    print(json.dumps(result["machine"]))
    if a.only in (None, "rate"):
        result["rate"] = rates(a.images, a.runs, a.batch)
    if a.only in (None, "merge"):
        result["merge"] = merge_cost(a.runs)
    if a.only in (None, "memory"):
        result["memory"] = memory([int(c) for c in a.counts.split(",")], a.mem_batch)
    if a.json:
        a.json.write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
