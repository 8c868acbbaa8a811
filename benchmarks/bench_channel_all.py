"""`cnn project --channel all` on a torchvision ResNet-18's last block (512 channels): peak memory
(maximum resident set size from /usr/bin/time -v) and wall time, this checkout against another
revision's worktree, runs interleaved (old, new, old, new, …) so that the machine's load hits both.

Make the model first (torch and torchvision, random weights, seed 0):

    python benchmarks/bench_channel_all.py --make --torch-python /work/venv-ref/bin/python

then, with a worktree of the old revision (git worktree add /tmp/base f6d1e56):

    python benchmarks/bench_channel_all.py --base /tmp/base --runs 2
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / "_work" / "rn18"
MODEL = WORK / "resnet18.onnx"
IMAGE = REPO / "sample_models" / "images" / "chelsea.jpg"

EXPORT = """
import torch, torchvision
torch.manual_seed(0)
m = torchvision.models.resnet18(weights=None).eval()
torch.onnx.export(m, torch.randn(1, 3, 224, 224), {path!r}, opset_version=17, dynamo=False,
                  input_names=["input"], output_names=["logits"])
"""


def make(torch_python: str) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    subprocess.run([torch_python, "-c", EXPORT.format(path=str(MODEL))], check=True)


def one_run(tree: Path, layer: int, extra: list[str]) -> tuple[float, float, float]:
    """(wall s, user+sys CPU s, peak RSS MiB) of one `cnn project --channel all` with ``tree`` on PYTHONPATH."""
    out = Path(tempfile.mkdtemp(prefix="bench-channel-all-"))
    env = dict(os.environ, PYTHONPATH=str(tree))
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "cnncli", "project", str(MODEL), str(IMAGE), "--layer",
           str(layer), "--channel", "all", "--out", str(out), "--quiet", "--format", "json", *extra]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tree)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-2000:])
        err = proc.stderr

        def field(name: str) -> str:
            return re.search(rf"{re.escape(name)}: (.+)", err).group(1).strip()

        parts = [float(p) for p in field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":")]
        wall = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
        cpu = float(field("User time (seconds)")) + float(field("System time (seconds)"))
        return wall, cpu, int(field("Maximum resident set size (kbytes)")) / 1024
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--make", action="store_true", help="export the model (needs --torch-python)")
    ap.add_argument("--torch-python", default="/work/venv-ref/bin/python")
    ap.add_argument("--base", type=Path, help="a worktree of the revision to compare against")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--layer", type=int, default=20, help="ResNet-18's last conv (layer4.1.conv2, 512 channels)")
    ap.add_argument("--no-figure", action="store_true")
    args = ap.parse_args()
    if args.make or not MODEL.is_file():
        make(args.torch_python)
    extra = ["--no-figure"] if args.no_figure else []
    trees = ([("before", args.base)] if args.base else []) + [("after", REPO)]
    results: dict[str, list] = {name: [] for name, _ in trees}
    print(f"load average before: {os.getloadavg()}", flush=True)
    for i in range(args.runs):
        for name, tree in trees:
            r = one_run(tree, args.layer, extra)
            results[name].append(r)
            print(f"run {i + 1} {name}: wall {r[0]:.1f} s, CPU {r[1]:.1f} s, peak {r[2]:.0f} MiB", flush=True)
    print(f"load average after: {os.getloadavg()}")
    for name, rs in results.items():
        print(f"{name}: wall median {statistics.median(r[0] for r in rs):.1f} s, CPU median "
              f"{statistics.median(r[1] for r in rs):.1f} s, peak median {statistics.median(r[2] for r in rs):.0f} MiB")


if __name__ == "__main__":
    main()
