"""`cnn profile` (issue 18): its overhead beyond the runs themselves, the spread of the runs, and
how far the sum of the per-layer medians is from the whole run's median.

For each model, ``--repeat`` times (after one untimed call that loads the libraries), in this
process: ``cnncli.api.profile.run`` with ``--runs``/``--warmup``, then the result rendered as a
table and as JSON. Timed apart, by wrapping the functions that do them:

* the runs: every ``Session.run`` (onnxruntime's own wall time, warm-up runs included);
* onnxruntime's session creation (graph optimisation, and writing the optimised graph the join
  reads);
* the rest: cnncli's own work (reading and analysing the model, `cnn stats`, the peaks from their
  cache, the trace and the join, rendering), in wall time and in CPU time (this process's, all
  threads: steadier than wall time on a busy machine).

"overhead" = the whole call, rendering included, less the runs. Also per call: the whole run's
median ``ms_run``, its min and max over the runs, and ``ms_layers`` (the sum of the per-layer
medians), whose gap to ``ms_run`` must stay within 25% on every model whose run takes over 10 ms,
and ``ms_kernels`` (the median of each run's kernel total: what the join had to place).

    /work/venv-ref/bin/python benchmarks/bench_profile.py --export   # torchvision ResNet-50/18 → benchmarks/_work/
    .venv/bin/python benchmarks/bench_profile.py                     # resnet50, resnet18, the ZF paper net
    .venv/bin/python benchmarks/bench_profile.py --strict            # exit 1 when a goal is missed

The exports are random-weight torchvision nets (TorchScript exporter, opset 17, symbolic batch),
kept in benchmarks/_work/ (gitignored).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work"
REPO = HERE.parent
NETS = ("resnet50", "resnet18")


def export() -> None:
    import torch
    import torchvision

    WORK.mkdir(exist_ok=True)
    for name in NETS:
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)().eval()
        torch.onnx.export(model, (torch.randn(1, 3, 224, 224),), str(WORK / f"{name}.onnx"), dynamo=False,
                          opset_version=17, input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}})
        print(f"wrote {WORK / f'{name}.onnx'}", file=sys.stderr)


class Clock:
    """Wraps the functions whose time is kept apart; ``seconds`` per label since ``reset``."""

    def __init__(self) -> None:
        import cnncli.runtime.profiling as profiling
        import cnncli.runtime.sessions as sessions

        self.seconds: dict[str, float] = {}
        self._wrap(sessions.Session, "run", "runs")
        self._wrap(profiling, "make_session", "session")

    def _wrap(self, owner, name: str, label: str) -> None:
        inner = getattr(owner, name)

        def timed(*args, **kwargs):
            start, cpu = time.perf_counter(), time.process_time()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - start
                self.seconds[label + " cpu"] = self.seconds.get(label + " cpu", 0.0) + time.process_time() - cpu

        setattr(owner, name, timed)

    def reset(self) -> None:
        self.seconds = {}


def one(model: str, runs: int, warmup: int, clock: Clock) -> dict[str, float]:
    from cnncli.api import profile

    clock.reset()
    start, cpu = time.perf_counter(), time.process_time()
    result = profile.run(model, profile.ProfileOptions(runs=runs, warmup=warmup))
    result.render("table")
    result.render("json")
    whole, cpu = time.perf_counter() - start, time.process_time() - cpu
    t = result.totals
    runs_s = clock.seconds.get("runs", 0.0)
    session = clock.seconds.get("session", 0.0)
    return {"whole": whole, "runs": runs_s, "overhead": whole - runs_s, "session": session,
            "cnncli": whole - runs_s - session,
            "cnncli cpu": cpu - clock.seconds.get("runs cpu", 0.0) - clock.seconds.get("session cpu", 0.0), "ms_run": t["ms_run"], "ms_min": t["ms_run_min"],
            "ms_max": t["ms_run_max"], "ms_layers": t["ms_layers"], "ms_kernels": t["ms_kernels"], "unjoined": t["ms_unjoined"]}


def med_ratio(calls: list[dict], key: str) -> float:
    return statistics.median(c[key] / c["ms_run"] for c in calls)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", action="store_true", help="export the torchvision nets (needs torch) and stop")
    ap.add_argument("--repeat", type=int, default=5, help="calls per model (medians over them)")
    ap.add_argument("--runs", type=int, default=10, help="timed runs per call (cnn profile --runs)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    ap.add_argument("models", nargs="*", help="ONNX files [default: the torchvision exports and the ZF paper net]")
    args = ap.parse_args()
    if args.export:
        export()
        return 0
    models = args.models or [str(WORK / f"{n}.onnx") for n in NETS if (WORK / f"{n}.onnx").exists()]
    if not args.models:
        models.append(str(REPO / "sample_models" / "zfnet_paper.onnx"))
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; {args.repeat} calls a model, "
          f"--runs {args.runs} --warmup {args.warmup}; seconds are medians over the calls", file=sys.stderr)
    clock = Clock()
    failed = []
    print("| model | runs (s) | overhead (s) | of which onnxruntime session (s) | of which cnncli (s) | cnncli CPU (s) | "
          "ms_run median (min–max over calls) | run spread (max−min)/median | ms_layers / ms_run | ms_kernels / ms_run |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for model in models:
        one(model, 1, 0, clock)  # libraries loaded, peaks cached
        calls = [one(model, args.runs, args.warmup, clock) for _ in range(args.repeat)]

        def med(key):
            return statistics.median(c[key] for c in calls)

        spread = statistics.median((c["ms_max"] - c["ms_min"]) / c["ms_run"] for c in calls)
        ratio = statistics.median(c["ms_layers"] / c["ms_run"] for c in calls)
        worst = max(abs(c["ms_layers"] / c["ms_run"] - 1) for c in calls)
        print(f"| {Path(model).name} | {med('runs'):.2f} | {med('overhead'):.3f} | {med('session'):.3f} | "
              f"{med('cnncli'):.3f} | {med('cnncli cpu'):.3f} | {med('ms_run'):.1f} ({min(c['ms_run'] for c in calls):.1f}–"
              f"{max(c['ms_run'] for c in calls):.1f}) | {100 * spread:.0f}% | {ratio:.2f} (worst call {100 * worst:.0f}% off) | {med_ratio(calls, 'ms_kernels'):.3f} |", flush=True)
        if med("ms_run") > 10 and worst > 0.25:
            failed.append(f"{Path(model).name}: a call's ms_layers is {100 * worst:.0f}% away from its ms_run")
        if Path(model).stem == "resnet50" and med("cnncli") >= 0.5:
            failed.append(f"resnet50: cnncli's own overhead {med('cnncli'):.3f} s")
        if any(c["unjoined"] for c in calls):
            failed.append(f"{Path(model).name}: kernels not joined")
    print(f"load average {os.getloadavg()[0]:.2f}", file=sys.stderr)
    for line in failed:
        print(f"MISSED: {line}", file=sys.stderr)
    return 1 if failed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
