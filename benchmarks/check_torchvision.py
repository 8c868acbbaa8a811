"""Real architectures, both torch exporters: cnn stats and cnn project against torch (issue 8).

For 16 torchvision classifiers (random weights from a fixed seed, random BatchNorm statistics,
eval mode), exported with the TorchScript exporter (dynamo=False, opset 17) and with the dynamo
exporter at its defaults (opset 20, optimizer on, weights in <file>.onnx.data):

* `cnn stats FILE --format json` (a real process): total MACs and params against forward-hook
  counts of the torch module (tests/fixtures/torch_reference.py: Conv2d and Linear MACs; params
  with each BatchNorm fed by a conv folded into it, as both exporters do);
* `cnn project` (the library, on the .npy input the torch side uses) for the last conv layer,
  its 2 strongest channels, keep map and max, in the 3 modes where every activation is
  ReLU-family (ReLU, ReLU6) and in backprop mode elsewhere, against torch autograd (deconvnet
  and guided through the ReLU-family override of torch_reference.reverse_mode). A projection
  counts as equal when max|cnncli − torch| ≤ 1e-3 · max|torch|. Where it is not, torch runs again
  in float64 (the "f32 or f64" column counts the projections equal to either) and the script
  counts the rectifier units onnxruntime's and torch's forward passes disagree on.

    python benchmarks/check_torchvision.py                  # all 16, both exporters
    python benchmarks/check_torchvision.py resnet18 convnext_tiny --exporter dynamo
    python benchmarks/check_torchvision.py --reexport       # export again (otherwise reused)

Exports are cached in benchmarks/_work/torchvision/ (gitignored): cnncli changes do not need them
made again. Needs the dev extra (torch==2.13.0, onnxscript) and torchvision without its deps:

    pip install --no-deps torchvision==0.28.0     # the release built against torch 2.13.0

About torchvision here: the only wheel of it is a CUDA build whose C extension does not load
beside the CPU torch, and `import torchvision` then fails in torchvision/_meta_registrations.py
("operator torchvision::nms does not exist": it registers fake kernels for the C ops). The
classification models use no C op, so this script puts empty modules in place of
torchvision._meta_registrations and torchvision._autograd_registrations before the import
(see _import_torchvision); detection ops (nms, roi_align) would not work, nothing here uses them.

Random weights: torchvision's initialisation (seed 0), then random BatchNorm statistics and
noise on every parameter whose elements are all equal (zero biases, LayerNorm's ones, ConvNeXt's
1e-6 layer scale): see torch_reference.randomise_constants for why.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import hashlib
import json
import os
import subprocess
import sys
import time
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "fixtures"))
from torch_reference import count_costs, find_tensor, randomise_constants, record_outputs, reverse_mode  # noqa: E402

WORK = REPO / "benchmarks" / "_work" / "torchvision"
EXPORTERS = ("torchscript", "dynamo")
TOL = 1e-3

# name, builder kwargs, input size, every activation ReLU-family
ARCHS = [
    ("alexnet", {}, 224, True),  # the TorchScript exporter needs the 6×6 adaptive pool to divide its input
    ("vgg11", {}, 224, True),  # likewise 7×7
    ("resnet18", {}, 64, True),
    ("resnet50", {}, 64, True),
    ("resnext50_32x4d", {}, 64, True),
    ("googlenet", {"transform_input": True, "aux_logits": False, "init_weights": False}, 64, True),
    ("inception_v3", {"transform_input": True, "aux_logits": False, "init_weights": False}, 96, True),
    ("densenet121", {}, 64, True),
    ("squeezenet1_0", {}, 64, True),
    ("shufflenet_v2_x1_0", {}, 64, True),
    ("mobilenet_v2", {}, 64, True),  # ReLU6
    ("mnasnet0_5", {}, 64, True),
    ("mobilenet_v3_small", {}, 64, False),  # Hardswish, Hardsigmoid
    ("efficientnet_b0", {}, 64, False),  # SiLU, Sigmoid
    ("regnet_y_400mf", {}, 64, False),  # Sigmoid (SE)
    ("convnext_tiny", {}, 64, False),  # LayerNorm, GELU
]


def _import_torchvision():
    for name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
        sys.modules.setdefault(name, types.ModuleType(name))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torchvision.models as models
    return models


def build(name: str, kwargs: dict, seed: int = 0) -> torch.nn.Module:
    models = _import_torchvision()
    torch.manual_seed(seed)
    model = getattr(models, name)(weights=None, **kwargs).eval()
    randomise_constants(model, torch.Generator().manual_seed(seed + 1))
    return model


def _fingerprint(model) -> str:
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def export(model, x, path: Path, exporter: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["x"], output_names=["logits"])
        else:
            torch.onnx.export(model, (x,), str(path), dynamo=True, verbose=False)


@dataclass
class Row:
    arch: str
    exporter: str
    size: int
    convs: int | None = None
    macs_torch: int | None = None
    macs_cnn: int | None = None
    params_torch: int | None = None
    params_cnn: int | None = None
    incomplete: bool | None = None
    unknown_ops: list = field(default_factory=list)
    stats_warning: str = ""
    projections_equal: int = 0  # within TOL of torch float32
    projections_equal_f64: int = 0  # of the others: within TOL of torch float64
    projections_total: int = 0
    max_rel_err: float | None = None
    errors: list = field(default_factory=list)
    differ: list = field(default_factory=list)  # projections beyond TOL: mode/keep/channel and errors
    flips: str = ""  # rectifier units the two forward passes disagree on (when some projection differs)
    seconds: dict = field(default_factory=dict)

    @property
    def macs_ok(self):
        return self.macs_cnn is not None and self.macs_cnn == self.macs_torch

    @property
    def params_ok(self):
        return self.params_cnn is not None and self.params_cnn == self.params_torch


def run_stats(path: Path, row: Row) -> None:
    cnn = Path(sys.executable).with_name("cnn")
    proc = subprocess.run([str(cnn), "stats", str(path), "--format", "json"], capture_output=True, text=True, timeout=600)
    row.stats_warning = " ".join(proc.stderr.split())[:300]
    if proc.returncode != 0:
        row.errors.append(f"stats exit {proc.returncode}: {row.stats_warning}")
        return
    totals = json.loads(proc.stdout)["totals"]
    row.macs_cnn, row.params_cnn = totals["macs"], totals["params"]
    row.incomplete, row.unknown_ops = totals["incomplete"], totals["unknown_ops"]


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:300]


def _rel(got, want) -> float:
    """max |got − want| / max |want|."""
    scale = float(np.abs(want).max())
    return float(np.abs(got - want).max()) / scale if scale > 0 else float("inf")


def torch_projections(model, x: np.ndarray, mode: str, value: np.ndarray, got: dict) -> dict:
    """{(keep, channel): torch's projection} for every projection cnncli made (``got``: keep ->
    results), from the module output equal to ``value``, in the dtype of ``x``."""
    xt = torch.from_numpy(x).requires_grad_(True)
    with reverse_mode(model, mode):
        _, a, _ = find_tensor(record_outputs(model, xt), value)
    out = {}
    for keep, results in got.items():
        for r in results:
            a_c = a[0, r.channel]
            if keep == "max" and r.location:
                a_c = a_c[tuple(r.location)]
            (g,) = torch.autograd.grad(0.5 * (a_c ** 2).sum(), xt, retain_graph=True)
            out[keep, r.channel] = g[0].numpy()
    return out


def rectifier_flips(onnx_model, model, x: np.ndarray) -> str:
    """Units that one side rectifies to zero and the other passes: onnxruntime's forward against
    torch's, over every Relu/Clip output of the graph that equals a torch module output."""
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(onnx_model)
    names = [n.output[0] for n in m.graph.node if n.op_type in ("Relu", "Clip")]
    del m.graph.output[:]
    m.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    values = sess.run(names, {sess.get_inputs()[0].name: x})
    with torch.no_grad(), reverse_mode(model, "backprop"):
        recorded = record_outputs(model, torch.from_numpy(x))
    flips = compared = units = 0
    for v in values:
        try:
            _, t, _ = find_tensor(recorded, v)
        except LookupError:
            continue
        compared += 1
        units += v.size
        flips += int(((v > 0) != (t.numpy() > 0)).sum())
    return f"{flips} of {units:,} rectifier units flipped (onnxruntime vs torch, {compared} of {len(names)} Relu/Clip outputs matched)"


def run_projections(path: Path, model, x: np.ndarray, relu_family: bool, row: Row, channels: int = 2) -> None:
    from cnncli.engine.model_input import open_for_images
    from cnncli.frontend.load import load_model
    from cnncli.engine.project import Projector
    from cnncli.engine.targets import by_layer, conv_nodes

    np.save(path.with_suffix(".input.npy"), x)
    modes = ("backprop", "deconvnet", "guided") if relu_family else ("backprop",)
    row.projections_total = len(modes) * 2 * channels
    try:
        m = open_for_images(load_model(str(path)), array=(str(path.with_suffix(".input.npy")), x.shape))
        row.convs = len(conv_nodes(m.graph))
        target = by_layer(m.graph, row.convs)
    except Exception as exc:  # noqa: BLE001 - the table reports whatever stops it
        row.errors.append(f"project: {_first_line(exc)}")
        return
    value = None
    errs = []
    for mode in modes:
        try:
            projector = Projector(m.model, m.graph, m.input_name, target.tensor, mode, "cpu")
            if value is None:
                value = projector.forward(x)[target.tensor]
            per = value[0].reshape(value.shape[1], -1).max(axis=1)
            chans = [int(c) for c in np.argsort(-per, kind="stable")[:channels]]
            got = {keep: projector.project(x, chans, keep) for keep in ("map", "max")}
        except Exception as exc:  # noqa: BLE001
            row.errors.append(f"project {mode}: {_first_line(exc)}")
            continue
        refs = torch_projections(model, x, mode, value, got)
        far = []
        for keep, results in got.items():
            for r in results:
                ref = refs[keep, r.channel]
                err = _rel(r.projection, ref)
                errs.append(err)
                row.projections_equal += int(err <= TOL)
                if err > TOL:
                    far.append((keep, r, ref, err))
        if far:  # how far, how widely, against torch in float64 too, and why
            refs64 = torch_projections(copy.deepcopy(model).double(), x.astype(np.float64), mode, value, got)
            if not row.flips:
                row.flips = rectifier_flips(m.model, model, x)
            for keep, r, ref, err in far:
                l2 = float(np.linalg.norm(r.projection - ref) / (np.linalg.norm(ref) or 1.0))
                ref64 = refs64[keep, r.channel]
                row.projections_equal_f64 += int(_rel(r.projection, ref64) <= TOL)
                row.differ.append(f"{mode}/{keep}/c{r.channel}: max {err:.1e}, L2 {l2:.1e}; vs torch float64: max "
                                  f"{_rel(r.projection, ref64):.1e}; torch float32 vs float64: max {_rel(ref, ref64):.1e}")
    row.max_rel_err = max(errs) if errs else None


def check(name: str, kwargs: dict, size: int, relu_family: bool, exporters, reexport: bool) -> list[Row]:
    rows = []
    t0 = time.perf_counter()
    model = build(name, kwargs)
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    xt = torch.from_numpy(x)
    costs = count_costs(model, xt)
    fingerprint = _fingerprint(model)
    for exporter in exporters:
        row = Row(name, exporter, size, macs_torch=costs["macs"], params_torch=costs["params"])
        rows.append(row)
        path = WORK / f"{name}.{exporter}.onnx"
        stamp = path.with_name(path.name + ".weights")  # which weights the cached file holds
        t = time.perf_counter()
        if reexport or not path.exists() or not stamp.exists() or stamp.read_text() != fingerprint:
            stamp.unlink(missing_ok=True)
            try:
                export(model, xt, path, exporter)
            except Exception as exc:  # noqa: BLE001
                row.errors.append(f"export: {_first_line(exc)}")
                continue
            stamp.write_text(fingerprint)
        row.seconds["export"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        try:
            run_stats(path, row)
        except subprocess.TimeoutExpired:
            row.errors.append("stats: timed out")
        row.seconds["stats"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        run_projections(path, model, x, relu_family, row)
        row.seconds["project"] = round(time.perf_counter() - t, 1)
        print(f"  {name} {exporter}: {json.dumps(row.__dict__, default=str)}", file=sys.stderr, flush=True)
    print(f"{name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return rows


def _fmt_diff(got, want) -> str:
    if got is None:
        return "—"
    return "yes" if got == want else f"no ({got - want:+,})"


def table(rows: list[Row]) -> str:
    lines = ["| arch | exporter | input | MACs (torch) | MACs exact? | params (torch) | params exact? | "
             "projections equal | equal to f32 or f64 | max rel. err | notes |",
             "|---|---|---|---:|---|---:|---|---|---|---|---|"]
    for r in rows:
        notes = []
        if r.incomplete:
            notes.append(f"incomplete, unknown_ops {r.unknown_ops}")
        notes += r.errors
        err = "—" if r.max_rel_err is None else f"{r.max_rel_err:.1e}"
        lines.append(f"| {r.arch} | {r.exporter} | {r.size} | {r.macs_torch:,} | {_fmt_diff(r.macs_cnn, r.macs_torch)} | "
                     f"{r.params_torch:,} | {_fmt_diff(r.params_cnn, r.params_torch)} | "
                     f"{r.projections_equal}/{r.projections_total} | {r.projections_equal + r.projections_equal_f64}/{r.projections_total} | {err} | {'; '.join(notes).replace('|', '/')[:240]} |")
    graphs = len(rows)
    lines.append("")
    lines.append(f"MACs exact on {sum(r.macs_ok for r in rows)} of {graphs} graphs, params on {sum(r.params_ok for r in rows)} "
                 f"of {graphs}; {sum(r.projections_equal for r in rows)} of {sum(r.projections_total for r in rows)} "
                 "projections equal torch autograd in float32, "
                 f"{sum(r.projections_equal + r.projections_equal_f64 for r in rows)} in float32 or float64.")
    differ = [f"* {r.arch} {r.exporter} ({r.flips}): " + "; ".join(r.differ) for r in rows if r.differ]
    if differ:
        lines += ["", f"Projections beyond {TOL:g} of the largest magnitude: max and L2 relative differences from torch float32, the max from torch float64, how far torch's own float32 result is from its float64 one, and how many rectifier units the onnxruntime and torch forward passes disagree on:", ""] + differ
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("archs", nargs="*", help="torchvision builder names (default: all 16)")
    ap.add_argument("--exporter", choices=EXPORTERS, action="append", help="only this exporter (repeatable)")
    ap.add_argument("--reexport", action="store_true", help="export again even when the file exists")
    ap.add_argument("--json", help="write every row to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    wanted = [a for a in ARCHS if not args.archs or a[0] in args.archs]
    unknown = set(args.archs) - {a[0] for a in ARCHS}
    if unknown:
        ap.error(f"unknown architectures: {sorted(unknown)}")
    load_before = os.getloadavg()
    start = datetime.datetime.now(datetime.timezone.utc)
    rows = []
    for name, kwargs, size, relu in wanted:
        rows += check(name, kwargs, size, relu, args.exporter or EXPORTERS, args.reexport)
    load_after = os.getloadavg()
    head = (f"{start:%Y-%m-%d %H:%M} UTC, torch {torch.__version__}, "
            f"load average {load_before[0]:.1f} before / {load_after[0]:.1f} after, "
            f"{(datetime.datetime.now(datetime.timezone.utc) - start).total_seconds() / 60:.0f} min")
    print(head)
    print()
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in rows], indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
