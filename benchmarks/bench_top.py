"""Throughput of `cnn top` (cnncli.engine.top.scan and cnncli.api.top.run) on the CPU.

Goal (from the issue): the scan runs at >= 80% of the images per second of a plain onnxruntime
forward pass over the same images at the same batch size, decoding counted the same way in both.
Both sides here read each JPEG with cnncli's own loader (decode, resize to 224x224, normalise:
cnncli.engine.model_input.image_loader) and run the same session (the model cut at the target); the
scan adds its per-batch work (argmax per channel, the streaming top-k). Also printed: the
decode-only and forward-only rates, and the cost of run_top's projection phase per kept entry
(project one unit on its own image, crop, render, write the PNGs).

    python benchmarks/bench_top.py            # 5 runs per figure
    python benchmarks/bench_top.py --quick    # 3 runs, fewer targets
    python benchmarks/bench_top.py --json out.json

Images (400 JPEGs of 256x256) and the ZF-style model are made under benchmarks/_work/.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_project import WORK, ensure_zf, machine_info, ms  # noqa: E402

IMAGES = WORK / "top_images"
N_IMAGES = 400
GOAL_SCAN_RATIO = 0.80


def ensure_images(n: int = N_IMAGES, size: int = 256, seed: int = 0) -> list[str]:
    """n photo-like JPEGs: smooth colour fields (upsampled noise) plus grain, quality 90."""
    from PIL import Image

    IMAGES.mkdir(parents=True, exist_ok=True)
    paths = [IMAGES / f"img_{i:04d}.jpg" for i in range(n)]
    if all(p.exists() for p in paths):
        return [str(p) for p in paths]
    rng = np.random.default_rng(seed)
    for p in paths:
        coarse = rng.uniform(0, 255, (8, 8, 3)).astype(np.uint8)
        img = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
        img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
        tmp = p.with_suffix(".tmp")
        Image.fromarray(img).save(tmp, format="JPEG", quality=90)
        os.replace(tmp, p)
    return [str(p) for p in paths]


class Setup:
    def __init__(self, model: str, layer: int):
        from cnncli.engine.model_input import image_loader, open_for_images
        from cnncli.frontend.load import load_model
        from cnncli.imaging.preprocess import make_preprocess
        from cnncli.engine.project import forward_model
        from cnncli.runtime.sessions import make_session
        from cnncli.engine.targets import by_layer

        self.m = open_for_images(load_model(model))
        self.layer = layer
        self.target = by_layer(self.m.graph, layer)
        self.prep = make_preprocess(self.m.shape[1], None)
        self.load = image_loader(self.m, self.prep)
        cut = forward_model(self.m.model, [self.target.tensor], {}, self.m.graph.types)
        self.session = make_session(cut.SerializeToString(), "cpu")


def baseline(s: Setup, paths: list[str], batch: int) -> None:
    """The plain loop: decode + resize + normalise each image, one session.run per batch."""
    from cnncli.engine.top import batched

    for chunk in batched(paths, batch):
        x = np.concatenate([s.load(p)[1] for p in chunk], axis=0)
        s.session.run([s.target.tensor], {s.m.input_name: x})


def do_scan(s: Setup, paths: list[str], batch: int, channels: list[int], k: int = 9):
    from cnncli.engine.top import scan

    return scan(s.session, s.m.input_name, s.target.tensor, paths, lambda p: s.load(p)[1], channels, k, batch)


def decode_only(s: Setup, paths: list[str]) -> None:
    for p in paths:
        s.load(p)


def forward_only(s: Setup, xs: list[np.ndarray]) -> None:
    for x in xs:
        s.session.run([s.target.tensor], {s.m.input_name: x})


def scan_rates(model: str, layers: list[int], paths: list[str], batch: int, runs: int) -> list[dict]:
    print(f"\n== scan throughput: {len(paths)} JPEGs 256x256 -> 224x224, batch {batch}, k 9"
          f" (goal: scan >= {GOAL_SCAN_RATIO:.0%} of the plain loop); rates in images/s")
    print(f"{'target':12} {'shape':>14} {'decode':>9} {'fwd only':>9} {'plain':>9} {'scan 16ch':>9} {'ratio':>6}"
          f" {'scan all':>9} {'ratio':>6}  best-of ratios  goal")
    rows = []
    for layer in layers:
        s = Setup(model, layer)
        n_ch = s.target.shape[1]
        c16 = sorted(int(c) for c in np.random.default_rng(0).choice(n_ch, 16, replace=False))
        call = list(range(n_ch))
        from cnncli.engine.top import batched

        xs = [np.concatenate([s.load(p)[1] for p in chunk], axis=0) for chunk in batched(paths, batch)]
        t = {"decode": [], "forward": [], "plain": [], "scan16": [], "scanall": []}
        baseline(s, paths[:batch * 2], batch)  # warm the session and the page cache
        do_scan(s, paths[:batch * 2], batch, call)
        for _ in range(runs):  # round-robin, so that a change in load hits all alike
            for key, fn in (("plain", lambda: baseline(s, paths, batch)),
                            ("scan16", lambda: do_scan(s, paths, batch, c16)),
                            ("scanall", lambda: do_scan(s, paths, batch, call)),
                            ("decode", lambda: decode_only(s, paths)),
                            ("forward", lambda: forward_only(s, xs))):
                t0 = time.perf_counter()
                fn()
                t[key].append(time.perf_counter() - t0)
        rate = {k: len(paths) / statistics.median(v) for k, v in t.items()}
        r16, rall = rate["scan16"] / rate["plain"], rate["scanall"] / rate["plain"]
        best16, bestall = min(t["plain"]) / min(t["scan16"]), min(t["plain"]) / min(t["scanall"])
        ok = min(r16, rall) >= GOAL_SCAN_RATIO
        shape = "x".join(map(str, s.target.shape[1:]))
        print(f"conv{layer:<8} {shape:>14} {rate['decode']:9.1f} {rate['forward']:9.1f} {rate['plain']:9.1f}"
              f" {rate['scan16']:9.1f} {r16:6.0%} {rate['scanall']:9.1f} {rall:6.0%}  {best16:6.0%} {bestall:6.0%}"
              f"  {'met' if ok else 'MISSED'}")
        rows.append({"layer": layer, "target": s.target.tensor, "shape": list(s.target.shape), "images": len(paths),
                     "batch": batch, "ips": rate, "ratio_16ch": r16, "ratio_all": rall, "met": ok,
                     "ratio_16ch_best": best16, "ratio_all_best": bestall,
                     "times_s": {k: statistics.median(v) for k, v in t.items()}})
    return rows


def projection_phase(model: str, layers: list[int], images: str, batch: int, runs: int, n_channels: str = "16",
                     k: int = 9) -> list[dict]:
    """Time run_top end to end, its scan and its project_units calls; the projection phase is
    everything after the scan (Projector set-up, projecting, cropping, rendering, PNG writing)."""
    top_mod = importlib.import_module("cnncli.engine.top")
    from cnncli.engine.project import Projector
    from cnncli.api.top import TopOptions, run as run_top

    print(f"\n== run_top end to end: {n_channels} channels, k {k}, batch {batch}: the projection phase per kept entry")
    print(f"{'target':12} {'total':>10} {'scan':>10} {'after scan':>11} {'entries':>7} {'per entry':>10}"
          f" {'of which project_units':>23}")
    real_scan, real_units = top_mod.scan, Projector.project_units
    clock: dict[str, float] = {}

    def timed_scan(*a, **kw):
        t0 = time.perf_counter()
        try:
            return real_scan(*a, **kw)
        finally:
            clock["scan_end"] = time.perf_counter()
            clock["scan"] = clock["scan_end"] - t0

    def timed_units(self, *a, **kw):
        t0 = time.perf_counter()
        try:
            return real_units(self, *a, **kw)
        finally:
            clock["units"] = clock.get("units", 0.0) + time.perf_counter() - t0

    rows = []
    top_mod.scan, Projector.project_units = timed_scan, timed_units
    try:
        for layer in layers:
            options = TopOptions(layer=layer, n_channels=n_channels, k=k, batch_size=batch, out=str(WORK / "top_out"),
                                 provider="cpu")
            per = []
            for _ in range(runs):
                clock.clear()
                t0 = time.perf_counter()
                rep = run_top(model, images, options, arrays=False)
                end = time.perf_counter()
                entries = sum(len(r.entries) for r in rep.rows)
                per.append({"total": end - t0, "scan": clock["scan"], "after": end - clock["scan_end"],
                            "units": clock["units"], "entries": entries})
            m = {key: statistics.median(p[key] for p in per) for key in ("total", "scan", "after", "units")}
            n = per[0]["entries"]
            print(f"conv{layer:<8} {ms(m['total']):>10} {ms(m['scan']):>10} {ms(m['after']):>11} {n:7d}"
                  f" {ms(m['after'] / n):>10} {ms(m['units'] / n):>23}")
            rows.append({"layer": layer, **{f"{k}_s": v for k, v in m.items()}, "entries": n,
                         "after_scan_per_entry_s": m["after"] / n, "project_units_per_entry_s": m["units"] / n})
    finally:
        top_mod.scan, Projector.project_units = real_scan, real_units
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 runs, fewer targets")
    ap.add_argument("--runs", type=int, help="runs per figure (default 5, --quick 3)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--json", help="write the figures to this file")
    ap.add_argument("--strict", action="store_true", help="exit 1 when the goal is missed")
    args = ap.parse_args(argv)
    runs = args.runs or (3 if args.quick else 5)
    info = machine_info()
    print(f"{info['date']}  {info['nproc']} CPUs ({info['cpu']}), python {info['python']}, "
          f"onnxruntime {info['onnxruntime']}, load {info['loadavg_start']:.2f}; median of {runs} runs")
    model = str(ensure_zf())
    paths = ensure_images()
    layers = [1, 5] if args.quick else [1, 2, 5]
    result = {"machine": info, "runs": runs}
    result["scan"] = scan_rates(model, layers, paths, args.batch, runs)
    result["run_top"] = projection_phase(model, layers, str(IMAGES), args.batch, max(1, runs // 2 + 1))
    result["machine"]["loadavg_end"] = os.getloadavg()[0]
    print(f"\nload average at the end: {result['machine']['loadavg_end']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    missed = [r for r in result["scan"] if not r["met"]]
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
