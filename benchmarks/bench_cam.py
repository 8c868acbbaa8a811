"""`cnn cam` against pytorch-grad-cam (grad-cam 1.5.7) on the same torch model, CPU.

Grad-CAM: torchvision's resnet18 at random weights (seed 0), exported to ONNX (torch.onnx.export,
dynamo=False, batch axis dynamic), 64 of the bundled net's synthetic training-style images
(sample_models/synthetic.py, written as PNGs) at 112x112, target layer4's last block
(``model.layer4[-1]``; in the ONNX file the tensor of equal value). Timed, median of --runs runs,
interleaved:

* pytorch-grad-cam: ``GradCAM(model, [layer])(input_tensor=x)`` on the 64 preprocessed images
  already in memory (its maps for the top class, upsampled to the input);
* cnn, engine: ``CamEngine.run`` on the same array (sessions and reverse graph already built);
* cnn, API: ``cnncli.cam(model, folder, batch_size=64)`` from the PNG files (model opened, reverse
  graph built, images decoded: all included);
* cnn, CLI: ``cnn cam MODEL FOLDER --batch-size 64 --no-figure --format json`` (process start, the
  64 map PNGs written).

The ratio is cnn over pytorch-grad-cam (goal: <= 1). The raw maps of both are compared too.

Score-CAM: shufflenet_v2_x0_5 (random, seed 0) on --score-images images, layer stage3: the forward
passes each tool makes (cnn counts its own; pytorch-grad-cam makes one per channel and image, plus
the first) and the time of each (pytorch-grad-cam's ScoreCAM with batch_size 64, as cnn's).

Needs torch, torchvision and grad-cam beside cnncli's dependencies (/work/venv-ref):

    /work/venv-ref/bin/python benchmarks/bench_cam.py --runs 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "fixtures" / "cam"))
CNN = ROOT / ".venv" / "bin" / "cnn"


def write_images(folder: Path, n: int, size: int) -> None:
    from PIL import Image

    from sample_models.synthetic import make_image

    for i in range(n):
        Image.fromarray(make_image(i, seed=7)[0]).resize((size, size)).save(folder / f"img{i:03d}.png")


def preprocessed(model_path: Path, folder: Path) -> np.ndarray:
    """The images as cnn feeds them (its own loader and preprocessing), [N, 3, H, W]."""
    from cnncli.api.sources import load
    from cnncli.engine.model_input import image_loader, model_preprocess, open_for_images

    m = open_for_images(load(str(model_path)))
    load_one = image_loader(m, model_preprocess(m))
    return np.concatenate([load_one(str(p))[1] for p in sorted(folder.glob("*.png"))])


def exported(model, layer, x: np.ndarray, path: Path) -> str:
    """Export ``model`` and return the ONNX tensor equal to ``layer``'s output."""
    import torch

    from make_cam_fixtures import export, layer_tensor

    export(model, torch.from_numpy(x[:2]), path, dynamo=False)
    acts = {}
    hook = layer.register_forward_hook(lambda mod, i, o: acts.__setitem__("a", o.detach().numpy().copy()))
    with torch.no_grad():
        model(torch.from_numpy(x[:2]))
    hook.remove()
    return layer_tensor(path, x[:2], acts["a"])


def engine_for(path: Path, tensor: str, method: str, batch: int):
    from cnncli.api.sources import load
    from cnncli.engine.cam import CamEngine, Score
    from cnncli.engine.model_input import open_for_images

    m = open_for_images(load(str(path)))
    out = m.model.graph.output[0].name
    return CamEngine(m.model, m.graph, m.input_name, tensor, Score(out, tuple(m.graph.shape(out))), method,
                     max_batch=batch)


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def gradcam_bench(work: Path, runs: int, n: int) -> None:
    import torch
    import torchvision
    from pytorch_grad_cam import GradCAM

    import cnncli

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    folder = work / "images"
    folder.mkdir()
    write_images(folder, n, 112)
    path = work / "resnet18.onnx"
    # (cnn's loader reads the exported model: export with a random batch, then read the images)
    tensor = exported(model, model.layer4[-1], np.random.default_rng(0).random((2, 3, 112, 112), np.float32), path)
    x = preprocessed(path, folder)
    engine = engine_for(path, tensor, "gradcam", n)
    top = lambda out: [[int(c)] for c in out.argmax(axis=1)]  # noqa: E731
    cam = GradCAM(model=model, target_layers=[model.layer4[-1]])
    xt = torch.from_numpy(x)
    times = {"pytorch-grad-cam": [], "cnn engine": [], "cnn API": [], "cnn CLI": []}
    ours = engine.run(x, top)
    cam(input_tensor=xt, targets=None)
    a = cam.activations_and_grads.activations[0].numpy()
    g = cam.activations_and_grads.gradients[0].numpy()
    ref = np.maximum(cam.get_cam_image(xt, None, None, a, g, False), 0)
    agreement = float(np.abs(ours.maps[:, 0] - ref).max() / np.abs(ref).max())
    out = work / "out"
    cli = [str(CNN), "cam", str(path), str(folder), "--layer", tensor, "--batch-size", str(n), "--no-figure",
           "--quiet", "--format", "json", "--out", str(out)]
    for _ in range(runs):
        times["pytorch-grad-cam"].append(timed(lambda: cam(input_tensor=xt, targets=None))[0])
        times["cnn engine"].append(timed(lambda: engine.run(x, top))[0])
        times["cnn API"].append(timed(lambda: cnncli.cam(str(path), str(folder), layer=tensor, batch_size=n))[0])
        times["cnn CLI"].append(timed(lambda: subprocess.run(cli, check=True, stdout=subprocess.DEVNULL))[0])
    peer = statistics.median(times["pytorch-grad-cam"])
    print(f"Grad-CAM, resnet18 (random, seed 0), {n} images 112x112, layer4[-1] = '{tensor}'; "
          f"raw maps agree to {agreement:.1e} relative")
    print("| tool | median s | runs | ratio (cnn / pytorch-grad-cam) |")
    print("|---|---:|---:|---:|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {med:.3f} | {len(ts)} | {med / peer:.2f} |")


def scorecam_bench(work: Path, runs: int, n: int) -> None:
    import torch
    import torchvision
    from pytorch_grad_cam import ScoreCAM

    torch.manual_seed(0)
    model = torchvision.models.shufflenet_v2_x0_5(weights=None).eval()
    path = work / "shufflenet.onnx"
    xr = np.random.default_rng(1).random((n, 3, 112, 112), np.float32) * 2 - 1
    tensor = exported(model, model.stage3, xr, path)
    engine = engine_for(path, tensor, "scorecam", 64)
    top = lambda out: [[int(c)] for c in out.argmax(axis=1)]  # noqa: E731
    cam = ScoreCAM(model=model, target_layers=[model.stage3])
    cam.batch_size = 64
    calls = [0]
    model.register_forward_hook(lambda *a: calls.__setitem__(0, calls[0] + len(a[1][0])))
    xt = torch.from_numpy(xr)
    ours, peer_times, cnn_times = None, [], []
    for _ in range(runs):
        calls[0] = 0
        peer_times.append(timed(lambda: cam(input_tensor=xt, targets=None))[0])
        t, ours = timed(lambda: engine.run(xr, top))
        cnn_times.append(t)
    peer, mine = statistics.median(peer_times), statistics.median(cnn_times)
    print(f"\nScore-CAM, shufflenet_v2_x0_5 (random), {n} images 112x112, stage3 = '{tensor}'")
    print("| tool | forward passes (images through the net) | median s | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| pytorch-grad-cam ScoreCAM (batch 64) | {calls[0]} | {peer:.3f} | 1.00 |")
    print(f"| cnn cam --method scorecam (batch 64) | {ours.forwards} | {mine:.3f} | {mine / peer:.2f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--score-images", type=int, default=8)
    p.add_argument("--torch-threads", type=int, help="torch.set_num_threads (default: torch's own)")
    p.add_argument("--only", choices=("gradcam", "scorecam"))
    args = p.parse_args()
    import platform

    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), load {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "g").mkdir()
        (Path(tmp) / "s").mkdir()
        if args.only != "scorecam":
            gradcam_bench(Path(tmp) / "g", args.runs, args.images)
        if args.only != "gradcam":
            scorecam_bench(Path(tmp) / "s", args.runs, args.score_images)
    print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
