"""Speed of `cnn project` (the deconvnet engine, cnncli.engine.project.Projector) on the CPU.

Goals (from the issue), each measured as the median of several warm runs:

1. the reverse pass of one channel costs at most 2.5x a forward pass to the target layer
   (``Projector.run_reverse`` on one seed row against a plain onnxruntime session of the model
   cut at the target), on a ZF-style network with random weights (targets conv1..conv5) and on
   a mid layer of the onnx package's light_resnet50 and light_vgg19;
2. all channels of a 64-channel layer in one batched run at least 5x faster than 64 single runs;
3. against Captum's NeuronDeconvolution on the same network in PyTorch: the same projection to
   1e-4 relative (max |a - b| / max |b|), and the time per projection (forward + reverse for
   cnncli, ``attribute()`` for Captum);
4. ``cnn project --channel all`` on 128 channels of zfnet_mini layer 5 in under 4 s end to end,
   with at least 80% of ``run_project``'s wall time inside onnxruntime runs (with and without
   the figures);
5. peak memory of ``--channel all`` independent of the channel count: 250, 500 and 1000 channels
   of a 1000-channel layer, each in its own process (peak RSS), within 10%.

Part 3 needs torch and captum: run the script with the Python of /work/venv-bench-torch (see
benchmarks/torch_nets.py); without them it is skipped and says so.

    python benchmarks/bench_project.py            # 7 runs per figure
    python benchmarks/bench_project.py --quick    # 3 runs, fewer targets
    python benchmarks/bench_project.py --json out.json

The models live in benchmarks/_work/ (made on first use). Exit status 0 whether or not the
goals are met; --strict makes it 1 when one is missed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from zf_layers import ZF_LAYERS  # noqa: E402  (this folder is on sys.path when a benchmark runs)

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work"
ZF_PATH = WORK / "zf_random.onnx"

GOAL_REVERSE_RATIO = 2.5  # reverse(1 channel) / forward to the target
GOAL_BATCH_SPEEDUP = 5.0  # 64 single runs / one batched run of 64
GOAL_CAPTUM_REL = 1e-4

ZF_INPUT = "image"


def zf_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """He-initialised float32 weights and small biases from a seeded generator."""
    rng = np.random.default_rng(seed)
    out, cin = {}, 3
    for name, cout, k, _, _, _ in ZF_LAYERS:
        out[f"{name}_w"] = (rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))).astype(np.float32)
        out[f"{name}_b"] = (rng.standard_normal(cout) * 0.05).astype(np.float32)
        cin = cout
    return out


def build_zf(seed: int = 0) -> onnx.ModelProto:
    """3x224x224 -> conv1 96x7x7/2 -> relu -> maxpool 3/2 -> conv2 256x5x5/2 -> relu -> maxpool 3/2
    -> conv3 384 -> relu -> conv4 384 -> relu -> conv5 256 -> relu; symbolic batch."""
    weights = zf_weights(seed)
    nodes, inits, x = [], [], ZF_INPUT
    for name, cout, k, stride, pad, pool in ZF_LAYERS:
        w, b = f"{name}_w", f"{name}_b"
        inits += [numpy_helper.from_array(weights[w], w), numpy_helper.from_array(weights[b], b)]
        nodes.append(helper.make_node("Conv", [x, w, b], [name], name=name, kernel_shape=[k, k],
                                      strides=[stride] * 2, pads=[pad] * 4))
        nodes.append(helper.make_node("Relu", [name], [f"{name}_relu"], name=f"{name}_relu"))
        x = f"{name}_relu"
        if pool:
            p = f"pool{name[-1]}"
            nodes.append(helper.make_node("MaxPool", [x], [p], name=p, kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1))
            x = p
    graph = helper.make_graph(
        nodes, "zf_random",
        [helper.make_tensor_value_info(ZF_INPUT, TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", 256, 13, 13])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="bench_project")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def ensure_zf(seed: int = 0) -> Path:
    if not ZF_PATH.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        tmp = ZF_PATH.with_suffix(".tmp")
        onnx.save(build_zf(seed), tmp)
        os.replace(tmp, ZF_PATH)
    return ZF_PATH


def light_path(name: str) -> Path:
    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / f"light_{name}.onnx"


# ---------------------------------------------------------------------------- timing


def times(fn, runs: int, warm: int = 1) -> list[float]:
    for _ in range(warm):
        fn()
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def med(ts: list[float]) -> float:
    return statistics.median(ts)


def ms(t: float) -> str:
    return f"{t * 1e3:9.1f} ms" if t < 10 else f"{t:9.2f} s "


def machine_info() -> dict:
    import onnxruntime as ort

    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "date": datetime.datetime.now().isoformat(timespec="minutes"),
        "nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
        "numpy": np.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__,
        "loadavg_start": os.getloadavg()[0],
    }
    try:
        import torch
        import captum

        info["torch"], info["captum"] = torch.__version__, captum.__version__
    except ImportError:
        pass
    return info


# ---------------------------------------------------------------------------- cnncli side


class Case:
    """One model and target: a Projector, a plain forward session cut at the target, an input."""

    def __init__(self, label: str, path: Path, layer: int, x: np.ndarray | None = None, mode: str = "deconvnet"):
        from cnncli.frontend.graph import analyse
        from cnncli.frontend.load import load_model
        from cnncli.engine.project import Projector, forward_model
        from cnncli.runtime.sessions import make_session
        from cnncli.engine.targets import by_layer

        self.label, self.layer = label, layer
        self.model = load_model(str(path)).model
        self.graph = analyse(self.model)
        self.input = self.graph.inputs[0].name
        self.target = by_layer(self.graph, layer)
        t0 = time.perf_counter()
        self.projector = Projector(self.model, self.graph, self.input, self.target.tensor, mode, "cpu")
        self.setup_s = time.perf_counter() - t0
        cut = forward_model(self.model, [self.target.tensor], {}, self.graph.types)
        self.plain = make_session(cut.SerializeToString(), "cpu")
        shape = self.graph.inputs[0].shape
        self.x = x if x is not None else np.random.default_rng(1).standard_normal(shape).astype(np.float32)
        self.fwd = self.projector.forward(self.x)
        act = self.fwd[self.target.tensor]
        self.n_channels = act.shape[1]
        strength = act[0].reshape(self.n_channels, -1).max(axis=1)
        self.channel = int(np.argmax(strength))  # a channel with a live map
        t0 = time.perf_counter()
        self.projector.run_reverse(self.seeds([self.channel]), self.fwd)  # builds the reverse session
        self.setup_s += time.perf_counter() - t0

    def seeds(self, channels: list[int]) -> np.ndarray:
        return self.projector.seeds(self.fwd[self.target.tensor], channels, "map")[0]

    def forward_plain(self):
        return self.plain.run([self.target.tensor], {self.input: self.x})

    def reverse(self, seeds: np.ndarray):
        return self.projector.run_reverse(seeds, self.fwd)


def goal1(cases: list[Case], runs: int) -> list[dict]:
    print(f"\n== 1. reverse pass of one channel vs forward pass to the target (goal <= {GOAL_REVERSE_RATIO}x)")
    print(f"{'model':16} {'target':26} {'forward':>12} {'fwd+switches':>13} {'reverse 1ch':>12} {'ratio':>7} {'(best)':>7}  goal")
    rows = []
    for c in cases:
        one = c.seeds([c.channel])
        # in blocks: onnxruntime's workers keep spinning for a while after a run, so alternating
        # sessions on 2 cores makes each one wait for the other's spinning threads
        tf = times(c.forward_plain, runs, warm=3)
        tp = times(lambda: c.projector.forward(c.x), runs, warm=3)
        tr = times(lambda: c.reverse(one), runs, warm=3)
        f, p, r = med(tf), med(tp), med(tr)
        ratio, best = r / f, min(tr) / min(tf)
        ok = ratio <= GOAL_REVERSE_RATIO
        print(f"{c.label:16} {c.target.tensor[:26]:26} {ms(f)} {ms(p):>13} {ms(r)} {ratio:6.2f}x {best:6.2f}x"
              f"  {'met' if ok else 'MISSED'}")
        rows.append({"model": c.label, "layer": c.layer, "target": c.target.tensor, "shape": list(c.target.shape),
                     "forward_s": f, "projector_forward_s": p, "reverse_1ch_s": r, "ratio": ratio, "met": ok,
                     "forward_best_s": min(tf), "projector_forward_best_s": min(tp), "reverse_1ch_best_s": min(tr),
                     "ratio_best": best, "setup_s": c.setup_s})
    return rows


def goal2(cases: list[Case], runs: int) -> list[dict]:
    print(f"\n== 2. 64 channels in one batched run vs 64 single runs (goal >= {GOAL_BATCH_SPEEDUP}x)")
    print("   reverse: run_reverse with 64 seed rows vs 64 calls of one row; project: project(x, 0..63) vs 64 x project(x, [c])")
    print(f"{'model':16} {'target':18} {'rev 64x1':>11} {'rev b64':>11} {'speedup':>7} {'(best)':>6}"
          f" {'proj 64x1':>11} {'proj b64':>11} {'speedup':>7} {'(best)':>6}  goal")
    rows = []
    for c in cases:
        chans = list(range(64))
        all64 = c.seeds(chans)
        singles = [all64[i:i + 1] for i in range(64)]

        def rev_loop():
            for s in singles:
                c.reverse(s)

        def proj_loop():
            for ch in chans:
                c.projector.project(c.x, [ch])

        t = {}
        for key, fn in (("rs", rev_loop), ("rb", lambda: c.reverse(all64)),  # in blocks, as in goal1
                        ("ps", proj_loop), ("pb", lambda: c.projector.project(c.x, chans))):
            t[key] = times(fn, runs, warm=1)
        m = {k: med(v) for k, v in t.items()}
        sr, sp = m["rs"] / m["rb"], m["ps"] / m["pb"]
        br, bp = min(t["rs"]) / min(t["rb"]), min(t["ps"]) / min(t["pb"])
        ok = min(sr, sp) >= GOAL_BATCH_SPEEDUP
        print(f"{c.label:16} {c.target.tensor[:18]:18} {ms(m['rs']):>11} {ms(m['rb']):>11} {sr:6.2f}x {br:5.2f}x"
              f" {ms(m['ps']):>11} {ms(m['pb']):>11} {sp:6.2f}x {bp:5.2f}x  {'met' if ok else 'MISSED'}")
        rows.append({"model": c.label, "layer": c.layer, "target": c.target.tensor, "shape": list(c.target.shape),
                     "reverse_singles64_s": m["rs"], "reverse_batched64_s": m["rb"], "reverse_speedup": sr,
                     "reverse_speedup_best": br, "project_singles64_s": m["ps"], "project_batched64_s": m["pb"],
                     "project_speedup": sp, "project_speedup_best": bp, "met": ok})
    return rows


# ---------------------------------------------------------------------------- captum


def goal3(layers: list[int], runs: int, runs64: int) -> list[dict] | None:
    print(f"\n== 3. against Captum NeuronDeconvolution on the same ZF-style net (agreement <= {GOAL_CAPTUM_REL:g} rel.)")
    try:
        import torch
        from captum.attr import NeuronDeconvolution
    except ImportError as exc:
        print(f"   skipped: {exc} (run with /work/venv-bench-torch/bin/python)")
        return None
    import warnings

    warnings.filterwarnings("ignore", module="captum")
    sys.path.insert(0, str(HERE))
    from torch_nets import ZFNet

    torch.set_num_threads(2)
    net = ZFNet.from_onnx(str(ensure_zf())).eval()
    x = np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)
    xt = torch.from_numpy(x)
    print(f"   torch {torch.__version__}, {torch.get_num_threads()} threads; onnxruntime default threads. "
          "Captum is given the whole net (to conv5) as a user would; 'cut' = an nn.Module ending at the target.")
    print("   rel.diff: as is | with the pools routed by onnxruntime's switches (near-ties aside)")
    print(f"{'target':7} {'ch':>4} {'rel.diff':>8} {'aligned':>8} {'sw.diff':>7} {'cnncli 1ch':>11} {'captum 1ch':>11}"
          f" {'cut':>10} {'speedup':>7} {'cnncli 64':>11} {'captum 64x1':>11} {'captum b64':>11} {'speedup':>7}")
    rows = []
    for layer in layers:
        case = Case(f"zf conv{layer}", ensure_zf(), layer, x)
        relu = net.relus[layer - 1]
        dec = NeuronDeconvolution(net, layer=relu)
        c = case.channel

        def ours(chans):
            return np.stack([r.projection for r in case.projector.project(x, chans)])

        def theirs(ch):
            return dec.attribute(xt, neuron_selector=lambda out: 0.5 * (out[:, ch] ** 2).sum(dim=(1, 2)))

        def theirs_batched(chans):
            # one row per channel: the input repeated, each row's selector picks its own channel
            xb = xt.expand(len(chans), -1, -1, -1).contiguous()
            idx = torch.as_tensor(chans)
            return dec.attribute(
                xb, neuron_selector=lambda out: 0.5 * (out[torch.arange(len(chans)), idx] ** 2).sum(dim=(1, 2)))

        chans = list(range(64))

        def rel_diff(a, b):
            return float(np.abs(a - b).max() / np.abs(b).max())

        a1, a64 = ours([c])[0], ours(chans)
        # the switches onnxruntime chose, per plane (its indices count over N*C*H*W)
        switches, mismatches = {}, 0
        for name, idx in case.fwd.items():
            if name.startswith("cnncli/indices/"):
                pool = name.rsplit("/", 1)[1]
                shape = case.graph.shape(f"conv{pool[-1]}_relu")
                plane = shape[2] * shape[3]
                switches[pool] = idx % plane
        net.set_switches(None)
        with torch.no_grad():
            h = xt
            for i in range(layer):
                h = net.relus[i](net.convs[i](h))
                name = ZF_LAYERS[i][0]
                if f"pool{name[-1]}" in switches:
                    _, ti = torch.nn.functional.max_pool2d(h, 3, 2, ceil_mode=True, return_indices=True)
                    mismatches += int((ti.numpy() != switches[f"pool{name[-1]}"]).sum())
                    h = net.pools[name](h)
        b1, b64 = theirs(c)[0].detach().numpy(), theirs_batched(chans).detach().numpy()
        rel = max(rel_diff(a1, b1), max(rel_diff(a64[i], b64[i]) for i in range(64) if np.abs(b64[i]).max() > 0))
        net.set_switches(switches)
        b1s, b64s = theirs(c)[0].detach().numpy(), theirs_batched(chans).detach().numpy()
        net.set_switches(None)
        rel_al = max(rel_diff(a1, b1s), max(rel_diff(a64[i], b64s[i]) for i in range(64) if np.abs(b64s[i]).max() > 0))
        # blocks, not alternation: both runtimes keep their worker threads spinning after a run
        t_ours = med(times(lambda: ours([c]), runs, warm=2))
        t_ours64 = med(times(lambda: ours(chans), runs64, warm=1))
        t_theirs = med(times(lambda: theirs(c), runs, warm=2))
        net.upto = layer
        t_cut = med(times(lambda: theirs(c), runs, warm=2))
        net.upto = len(ZF_LAYERS)
        t_theirs64 = med(times(lambda: [theirs(k) for k in chans], max(2, runs64 // 2), warm=0))
        t_theirs_b = med(times(lambda: theirs_batched(chans), runs64, warm=1))
        best64 = min(t_theirs64, t_theirs_b)
        ok = rel_al <= GOAL_CAPTUM_REL
        print(f"conv{layer:<3} {c:4d} {rel:8.1e} {rel_al:8.1e} {mismatches:7d} {ms(t_ours):>11} {ms(t_theirs):>11}"
              f" {ms(t_cut):>10} {min(t_theirs, t_cut) / t_ours:6.2f}x {ms(t_ours64):>11} {ms(t_theirs64):>11}"
              f" {ms(t_theirs_b):>11} {best64 / t_ours64:6.2f}x")
        rows.append({"layer": layer, "channel": c, "rel_diff": rel, "rel_diff_same_switches": rel_al,
                     "switch_mismatches": mismatches, "agree": ok,
                     "cnncli_1ch_s": t_ours, "captum_1ch_s": t_theirs, "captum_1ch_cut_s": t_cut,
                     "speedup_1ch": min(t_theirs, t_cut) / t_ours,
                     "cnncli_64ch_s": t_ours64, "captum_64_singles_s": t_theirs64, "captum_batched64_s": t_theirs_b,
                     "speedup_64ch": best64 / t_ours64})
    return rows


# ---------------------------------------------------------------------------- --channel all


WIDE_PATH = WORK / "wide1000.onnx"
GOAL_ALL_128_S = 4.0  # 128 channels of zfnet_mini layer 5, end to end (the CLI)
GOAL_ORT_FRACTION = 0.80  # of the wall time of `--channel all` inside onnxruntime runs
GOAL_FLAT_MEMORY = 0.10  # peak RSS at 1000 channels within 10% of the peak at 250


def ensure_wide() -> Path:
    """3x112x112 -> conv 7x7/2 (32) -> relu -> pool 3/2 -> conv 5x5/2 (64) -> relu -> pool 3/2 ->
    conv 3x3 (1000) -> relu: a 1000-channel layer (layer 3, 1000x5x5), random weights."""
    if WIDE_PATH.exists():
        return WIDE_PATH
    rng = np.random.default_rng(2)
    spec = [("conv1", 3, 32, 7, 2, 0, True), ("conv2", 32, 64, 5, 2, 0, True), ("conv3", 64, 1000, 3, 1, 1, False)]
    nodes, inits, x = [], [], "image"
    for name, cin, cout, k, stride, pad, pool in spec:
        w = (rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"{name}_w"),
                  numpy_helper.from_array((rng.standard_normal(cout) * 0.05).astype(np.float32), f"{name}_b")]
        nodes += [helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [name], name=name, kernel_shape=[k, k],
                                   strides=[stride] * 2, pads=[pad] * 4),
                  helper.make_node("Relu", [name], [f"{name}_relu"], name=f"{name}_relu")]
        x = f"{name}_relu"
        if pool:
            nodes.append(helper.make_node("MaxPool", [x], [f"{name}_pool"], name=f"{name}_pool", kernel_shape=[3, 3],
                                          strides=[2, 2]))
            x = f"{name}_pool"
    graph = helper.make_graph(nodes, "wide1000", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 112, 112])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="bench_project")
    model.ir_version = 8
    WORK.mkdir(parents=True, exist_ok=True)
    tmp = WIDE_PATH.with_suffix(".tmp")
    onnx.save(model, tmp)
    os.replace(tmp, WIDE_PATH)
    return WIDE_PATH


def _repo() -> Path:
    return HERE.parent


def cli_run(args: list[str]) -> float:
    import subprocess

    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cnncli", *args], check=True, stdout=subprocess.DEVNULL, cwd=_repo())
    return time.perf_counter() - t


# a child process: run_project on N channels, then print its peak RSS and timings as JSON
_CHILD = """
import json, resource, sys, time, threading
import onnxruntime as ort
from cnncli.api.project import ProjectOptions, run as run_project
spans, lock = [], threading.Lock()
real = ort.InferenceSession.run
def run(self, *a, **kw):
    t0 = time.perf_counter()
    try:
        return real(self, *a, **kw)
    finally:
        with lock:
            spans.append((t0, time.perf_counter()))
ort.InferenceSession.run = run
model, image, layer, channels, out, figure = sys.argv[1:7]
t, c = time.perf_counter(), time.process_time()
rep = run_project(model, image, ProjectOptions(layer=int(layer), channels=channels, out=out, figure=figure == "1"),
                  arrays=False)
wall, cpu = time.perf_counter() - t, time.process_time() - c
spans.sort()
busy, end = 0.0, None  # the union of the onnxruntime run intervals (runs can overlap file writing)
for a, b in spans:
    if end is None or a > end:
        busy += b - a; end = b
    elif b > end:
        busy += b - end; end = b
print(json.dumps({"wall_s": wall, "cpu_s": cpu, "ort_s": busy, "runs": len(spans), "n": len(rep.rows),
                  "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def child(model: Path, image: Path, layer: int, channels: str, out: Path, figure: bool = True) -> dict:
    import shutil
    import subprocess

    shutil.rmtree(out, ignore_errors=True)
    res = subprocess.run([sys.executable, "-c", _CHILD, str(model), str(image), str(layer), channels, str(out),
                          "1" if figure else "0"],
                         check=True, capture_output=True, text=True, cwd=_repo())
    shutil.rmtree(out, ignore_errors=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def goal4(runs: int) -> dict:
    """`cnn project --channel all` on the bundled network: end-to-end time and where it goes."""
    mini = _repo() / "sample_models" / "zfnet_mini.onnx"
    image = _repo() / "sample_models" / "images" / "chelsea.jpg"
    out = WORK / "all_out"
    print(f"\n== 4. cnn project --channel all: 128 channels of zfnet_mini layer 5 (goals: < {GOAL_ALL_128_S:g} s, "
          f">= {GOAL_ORT_FRACTION:.0%} of the time in onnxruntime)")
    walls = []
    for _ in range(runs):
        import shutil

        shutil.rmtree(out, ignore_errors=True)
        walls.append(cli_run(["project", str(mini), str(image), "--layer", "5", "--channel", "all", "--out", str(out),
                              "--format", "json"]))
    inner = [child(mini, image, 5, "all", out) for _ in range(runs)]
    bare = [child(mini, image, 5, "all", out, figure=False) for _ in range(runs)]
    wall = med(walls)
    print(f"   cnn process end to end: {ms(wall)} (median of {runs}; best {ms(min(walls))})")
    fracs = {}
    for label, rs in (("with figures", inner), ("--no-figure", bare)):
        fracs[label] = frac = med([r["ort_s"] / r["wall_s"] for r in rs])
        print(f"   run_project in process, {label}: {ms(med([r['wall_s'] for r in rs]))} wall, "
              f"{ms(med([r['cpu_s'] for r in rs]))} CPU (all threads), onnxruntime runs "
              f"{ms(med([r['ort_s'] for r in rs]))} = {frac:.0%} of the wall time; {rs[0]['runs']} runs")
    return {"cli_s": wall, "cli_best_s": min(walls), "ort_fraction": fracs["with figures"],
            "ort_fraction_no_figure": fracs["--no-figure"], "met_time": wall < GOAL_ALL_128_S,
            "met_fraction": fracs["with figures"] >= GOAL_ORT_FRACTION, "inner": inner, "inner_no_figure": bare}


def goal5() -> dict:
    """Peak memory of `--channel all` against the number of channels (one process per figure)."""
    wide = ensure_wide()
    image = _repo() / "sample_models" / "images" / "chelsea.jpg"
    out = WORK / "wide_out"
    print(f"\n== 5. peak memory vs channels on a 1000-channel layer (goal: 1000 within {GOAL_FLAT_MEMORY:.0%} of 250)")
    rows = {}
    for n in (250, 500, 1000):
        r = child(wide, image, 3, ",".join(str(c) for c in range(n)) if n < 1000 else "all", out)
        rows[n] = r
        print(f"   {n:5d} channels: peak RSS {r['peak_rss_kb'] / 1024:7.1f} MiB, {ms(r['wall_s'])}, "
              f"onnxruntime {r['ort_s'] / r['wall_s']:.0%}")
    ratio = rows[1000]["peak_rss_kb"] / rows[250]["peak_rss_kb"]
    print(f"   peak(1000) / peak(250) = {ratio:.3f}")
    return {"rows": {str(k): v for k, v in rows.items()}, "ratio_1000_250": ratio,
            "met": abs(ratio - 1) <= GOAL_FLAT_MEMORY}


# ---------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 runs, fewer targets")
    ap.add_argument("--runs", type=int, help="runs per figure (default 7, --quick 3)")
    ap.add_argument("--only", choices=("1", "2", "3", "4", "5"), action="append", help="run only these parts")
    ap.add_argument("--json", help="write the figures to this file")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    args = ap.parse_args(argv)
    runs = args.runs or (3 if args.quick else 7)
    runs1 = args.runs or (5 if args.quick else 25)  # goal 1: single runs of a few ms
    parts = set(args.only or ("1", "2", "3", "4", "5"))
    info = machine_info()
    print(f"{info['date']}  {info['nproc']} CPUs ({info['cpu']}), python {info['python']}, "
          f"onnxruntime {info['onnxruntime']}, load {info['loadavg_start']:.2f}; medians of {runs1} runs (part 1),"
          f" {max(2, runs // 2)} (part 2), {runs} (part 3)")
    zf = ensure_zf()
    result: dict = {"machine": info, "runs": runs}

    if "1" in parts or "2" in parts:
        zf_layers = [1, 3, 5] if args.quick else [1, 2, 3, 4, 5]
        cases1 = [Case(f"zf conv{i}", zf, i) for i in zf_layers]
        cases1.append(Case("light_resnet50", light_path("resnet50"), 27))  # res4 block, 1024x14x14 ... mid of 53 convs
        cases1.append(Case("light_vgg19", light_path("vgg19"), 8))  # conv3_4, 256x56x56
        if "1" in parts:
            result["goal1"] = goal1(cases1, runs1)
        if "2" in parts:
            by_label = {c.label: c for c in cases1}
            cases2 = [by_label["zf conv2"] if "zf conv2" in by_label else Case("zf conv2", zf, 2),
                      Case("light_resnet50", light_path("resnet50"), 1),  # conv1: 64x112x112
                      Case("light_vgg19", light_path("vgg19"), 2)]  # conv1_2: 64x224x224
            if args.quick:
                cases2 = cases2[:2]
            result["goal2"] = goal2(cases2, max(2, runs // 2))
    if "3" in parts:
        result["goal3"] = goal3([1, 2, 5] if args.quick else [1, 2, 3, 4, 5], runs, max(2, runs // 2))
    if "4" in parts:
        result["goal4"] = goal4(max(3, runs // 2))
    if "5" in parts:
        result["goal5"] = goal5()
    result["machine"]["loadavg_end"] = os.getloadavg()[0]
    print(f"\nload average at the end: {result['machine']['loadavg_end']:.2f}")
    missed = [k for k in ("goal1", "goal2") for r in result.get(k, []) if not r["met"]]
    missed += ["goal3" for r in result.get("goal3") or [] if not r["agree"]]
    missed += [k for k in ("goal4",) if k in result and not (result[k]["met_time"] and result[k]["met_fraction"])]
    missed += [k for k in ("goal5",) if k in result and not result[k]["met"]]
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
