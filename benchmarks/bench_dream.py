"""`cnn dream` against Lucent (torch-lucent 0.1.8) on the bundled network, CPU.

Both optimise the same objective of sample_models/zfnet_mini.onnx (layer 5's block output, relu5,
by default) with the same parametrisation (param.image(112, fft=True, decorrelate=True)), the
same standard transforms, Adam lr 0.05 and 512 steps, and start from the same spectrum: Lucent's
is overwritten with cnn's starting draw, and ``np.random.seed(seed)`` before render_vis makes
Lucent draw the transforms cnn draws (cnncli/engine/dream_transforms.py). The torch network is
rebuilt here from the ONNX file's weights (Conv, Relu, MaxPool, LRN, Flatten, Gemm).

Reported, for each channel: its mean activation on the bundled photos (cnn features), the
objective cnn and Lucent reach (the channel's mean on the final image as a picture, untransformed,
and the mean of the last 32 steps' objective on their transformed images), the ratio of cnn's to
the photos' mean (goal >= 10) and the wall time of 512 steps: ``cnncli.dream`` in process (model
opened, reverse graph built, sessions made: all included) and the ``cnn dream`` command line
(process start and PNGs included) against Lucent's ``render_vis`` (the torch model already built),
median of --runs runs, interleaved. Goal: cnn no slower (ratio <= 1).

Needs torch, torch-lucent and kornia 0.4.1 beside cnncli's own dependencies (/work/venv-ref):

    /work/venv-ref/bin/python benchmarks/bench_dream.py                   # 512 steps, 3 runs
    /work/venv-ref/bin/python benchmarks/bench_dream.py --channels 3,7 --steps 128 --runs 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODEL = ROOT / "sample_models" / "zfnet_mini.onnx"
CNN = ROOT / ".venv" / "bin" / "cnn"


def torch_zfnet_mini(path: Path):
    """The ONNX network as a torch nn.Sequential whose modules are named as its nodes (so Lucent's
    hooks find 'relu5'), with the file's weights."""
    import onnx
    import torch
    from onnx import helper, numpy_helper
    from torch import nn

    m = onnx.load(str(path))
    weights = {t.name: torch.tensor(numpy_helper.to_array(t).copy()) for t in m.graph.initializer}
    layers = OrderedDict()
    for n in m.graph.node:
        a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
        if n.op_type == "Conv":
            w = weights[n.input[1]]
            conv = nn.Conv2d(w.shape[1], w.shape[0], tuple(a["kernel_shape"]), tuple(a.get("strides", (1, 1))),
                             tuple(a.get("pads", (0, 0, 0, 0))[:2]))
            conv.weight.data, conv.bias.data = w, weights[n.input[2]]
            layers[n.name] = conv
        elif n.op_type == "Relu":
            layers[n.name] = nn.ReLU()
        elif n.op_type == "MaxPool":
            layers[n.name] = nn.MaxPool2d(tuple(a["kernel_shape"]), tuple(a["strides"]), ceil_mode=bool(a.get("ceil_mode", 0)))
        elif n.op_type == "LRN":
            layers[n.name] = nn.LocalResponseNorm(a["size"], a["alpha"], a["beta"], a["bias"])
        elif n.op_type == "Flatten":
            layers[n.name] = nn.Flatten()
        elif n.op_type == "Gemm":
            w = weights[n.input[1]]
            fc = nn.Linear(w.shape[1], w.shape[0])
            fc.weight.data, fc.bias.data = w, weights[n.input[2]]
            layers[n.name] = fc
        else:
            raise SystemExit(f"no torch rebuild for {n.op_type}")
    return nn.Sequential(layers).eval()


def lucent_run(net, layer: str, channels: list[int], steps: int, seed: int, size: int):
    """Lucent's render_vis from cnn's starting spectrum and transform draws: (images [B, 3, h, w],
    history [steps, B], seconds)."""
    import torch
    from lucent.optvis import objectives, param, render

    from cnncli.engine.dream_param import FFTImage

    init = FFTImage(len(channels), 3, size, size).init([(seed, c + 1) for c in channels])
    captured = []
    hook = dict(net.named_modules())[layer].register_forward_hook(
        lambda mod, inp, out: captured.append([float(out[i, c].detach().mean()) for i, c in enumerate(channels)]))

    def param_f():
        params, image_f = param.image(size, batch=len(channels))
        with torch.no_grad():
            params[0].copy_(torch.from_numpy(init))
        holder["image_f"] = image_f
        return params, image_f

    holder = {}
    objective = objectives.Objective.sum([objectives.channel(layer, c, batch=i) for i, c in enumerate(channels)])
    np.random.seed(seed)
    start = time.perf_counter()
    render.render_vis(net, objective, param_f, thresholds=(steps,), fixed_image_size=size,
                      show_image=False, progress=False)
    seconds = time.perf_counter() - start
    hook.remove()
    with torch.no_grad():
        images = holder["image_f"]().numpy()
    return images, np.asarray(captured[:steps]), seconds


def cnn_run(layer: int, channels: list[int], steps: int, seed: int):
    import cnncli

    start = time.perf_counter()
    d = cnncli.dream(str(MODEL), layer=layer, channels=channels, steps=steps, seed=seed)
    return d, time.perf_counter() - start


def cli_run(layer: int, channels: list[int], steps: int, seed: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        cmd = [str(CNN), "dream", str(MODEL), "--layer", str(layer), "--channel", ",".join(map(str, channels)),
               "--steps", str(steps), "--seed", str(seed), "--out", out, "--quiet", "--format", "json"]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - start


def photo_means(layer: int, channels: list[int]) -> dict[int, float]:
    """Each channel's mean activation over the bundled photos (the mean of cnn features' means)."""
    import cnncli
    from cnncli.bundled import sample_images

    per = {c: [] for c in channels}
    for image in sample_images():
        rows = {r.channel: r.mean for r in cnncli.features(str(MODEL), str(image), layer=layer).rows}
        for c in channels:
            per[c].append(rows[c])
    return {c: float(np.mean(v)) for c, v in per.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", type=int, default=5)
    ap.add_argument("--channels", default="3")
    ap.add_argument("--steps", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-cli", action="store_true", help="skip the command-line timing")
    ap.add_argument("--torch-threads", default="1,0",
                    help="torch thread counts Lucent runs with (0: torch's default); the fastest is the baseline")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--save", help="folder for cnn's and Lucent's images side by side (PNG)")
    args = ap.parse_args()
    import torch

    from cnncli.engine.dream import Dreamer
    from cnncli.api.sources import load
    from cnncli.engine.model_input import model_preprocess, open_for_images
    from cnncli.engine.targets import by_layer

    channels = [int(c) for c in args.channels.split(",")]
    net = torch_zfnet_mini(MODEL)
    m = open_for_images(load(str(MODEL)))
    target = by_layer(m.graph, args.layer)
    evaluator = Dreamer(m.model, m.graph, m.input_name, target.tensor, m.shape, model_preprocess(m))
    threads = [int(t) for t in args.torch_threads.split(",")]
    default_threads = torch.get_num_threads()
    times = {"cnn": [], "cli": [], **{f"lucent_threads{t or default_threads}": [] for t in threads}}
    for _ in range(args.runs):
        d, t = cnn_run(args.layer, channels, args.steps, args.seed)
        times["cnn"].append(t)
        if not args.no_cli:
            times["cli"].append(cli_run(args.layer, channels, args.steps, args.seed))
        for n in threads:
            torch.set_num_threads(n or default_threads)
            images, history, t = lucent_run(net, target.tensor, channels, args.steps, args.seed, m.shape[2])
            times[f"lucent_threads{n or default_threads}"].append(t)
    lucent_end = evaluator.evaluate(images.astype(np.float32), channels, "channel")
    photos = photo_means(args.layer, channels)
    rows = []
    for i, c in enumerate(channels):
        rows.append({"channel": c, "photos_mean": photos[c], "cnn_end": d.rows[i].objective_end,
                     "lucent_end": float(lucent_end[i]), "cnn_last32": float(d.history[-32:, i].mean()),
                     "lucent_last32": float(history[-32:, i].mean()),
                     "ratio_to_photos": d.rows[i].objective_end / photos[c] if photos[c] > 0 else float("inf")})
    med = {k: statistics.median(v) for k, v in times.items() if v}
    med["lucent"] = min(v for k, v in med.items() if k.startswith("lucent_"))
    report = {"model": str(MODEL.relative_to(ROOT)), "layer": args.layer, "tensor": target.tensor, "steps": args.steps,
              "seed": args.seed, "runs": args.runs, "channels": rows, "seconds": times, "median_s": med,
              "ratio_cnn_to_lucent": med["cnn"] / med["lucent"],
              "ratio_cli_to_lucent": med["cli"] / med["lucent"] if "cli" in med else None,
              "torch": torch.__version__, "cpus": os.cpu_count(),
              "load": os.getloadavg()}
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    if args.save:
        from cnncli.engine.dream import to_pixels
        from cnncli.imaging.pictures import grid, save_png

        Path(args.save).mkdir(parents=True, exist_ok=True)  # top row cnn, bottom row Lucent, at 2x
        pics = [to_pixels(im) for im in d.images] + [to_pixels(im) for im in images]
        figure = grid(pics, len(channels), 2 * max(pics[0].shape[:2]), gap=6, bg=255)
        save_png(figure, Path(args.save) / f"cnn_vs_lucent_layer{args.layer}.png")


if __name__ == "__main__":
    main()
