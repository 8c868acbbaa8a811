"""Speed and memory of `cnn stats` against onnx-tool 1.0.1 and onnx-opcounter 0.0.4.

Every figure is the wall time of a whole process (start to exit, imports included), the median
of several runs, and the peak RSS of that process (os.wait4's ru_maxrss). Runs go round-robin
over the tools so that a change in machine load hits them alike. Models:

* the onnx package's model-zoo architectures, onnx/backend/test/data/light/light_*.onnx;
* chains of 4,000, 8,000 and 16,000 Conv+Relu pairs and a model with 3 GiB of external
  weights, made by benchmarks/make_models.py (run first, or pass --make);
* a 1.2 GB file that is not a model (random first MiB, then a sparse hole), made here: cnn
  must refuse it (exit 1) in under 1.5 s and 400 MiB, from its first bytes.

Run it with the Python of the venv where cnncli is installed; the peers live in a venv of
their own (see benchmarks/README.md):

    python benchmarks/bench_stats.py                 # 7 runs each (slow peers: fewer)
    python benchmarks/bench_stats.py --quick         # 3 runs each
    python benchmarks/bench_stats.py --peer-python /path/to/venv-bench/bin/python

A peer that crashes or times out is reported as such. Exit status 0 whether or not the goals
are met; --strict makes it 1 when one is missed.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work"
CHAIN_PAIRS = (4000, 8000, 16000)
EXTERNAL = WORK / "external_3g.onnx"
ZFNET = HERE.parent / "sample_models" / "zfnet_paper.onnx"

# goals (from the issue)
GOAL_RATIO = 1.0  # cnn / fastest peer, on every light model and on the 16,000-node chain
GOAL_SCALING = 2.2  # t(16,000 pairs) / t(8,000 pairs)
GOAL_EXT_SECONDS = 2.0
GOAL_EXT_RSS_MIB = 300
GOAL_HELP_SECONDS = 0.3
# a 1.2 GB file that is not a model (issue 9): refused from its first bytes
NONMODEL = WORK / "random_1200m.onnx"
NONMODEL_BYTES = 1_200_000_000
GOAL_NONMODEL_SECONDS = 1.5
GOAL_NONMODEL_RSS_MIB = 400
FORBIDDEN_IMPORTS = ("onnxruntime", "matplotlib")


@dataclass
class Cell:
    """The runs of one tool on one model."""

    tool: str
    model: str
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # user + sys seconds
    rss_kib: list[int] = field(default_factory=list)
    failure: str | None = None  # "crashed (exit 1): ...", "timed out after 120 s"

    @property
    def ok(self) -> bool:
        return self.failure is None and bool(self.times)

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    @property
    def peak_mib(self) -> float | None:
        return max(self.rss_kib) / 1024 if self.rss_kib else None


def run_once(cmd: list[str], timeout: float) -> tuple[float, int, int, str, float]:
    """Wall seconds, exit status, peak RSS (KiB), the tail of stderr and CPU seconds of one process."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read()[-2000:].decode("utf-8", "replace")
    cpu = usage.ru_utime + usage.ru_stime
    if timed_out.is_set():
        return elapsed, -999, usage.ru_maxrss, tail, cpu
    return elapsed, proc.returncode, usage.ru_maxrss, tail, cpu


def mem_available_gib() -> float | None:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def failure_text(rc: int, tail: str, timeout: float) -> str:
    if rc == -999:
        return f"timed out after {timeout:.0f} s"
    lines = [ln.strip() for ln in tail.strip().splitlines() if ln.strip()]
    why = lines[-1] if lines else ""
    kind = f"killed by signal {-rc}" if rc < 0 else f"exit {rc}"
    return f"crashed ({kind}){': ' + why[:160] if why else ''}"


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.cells: dict[tuple[str, str], Cell] = {}
        bindir = Path(sys.executable).parent
        self.cnn = str(bindir / "cnn")
        self.tools: dict[str, list[str]] = {
            "cnn json": [self.cnn, "stats", "{model}", "--format", "json"],
            "cnn table": [self.cnn, "stats", "{model}"],
        }
        self.peers: list[str] = []
        if args.peer_python:
            peer_bin = Path(args.peer_python).parent
            self.tools["onnx-tool"] = [args.peer_python, "-m", "onnx_tool", "-i", "{model}"]
            self.tools["onnx-opcounter"] = [str(peer_bin / "onnx_opcounter"), "{model}", "--calculate-macs"]
            self.peers = ["onnx-tool", "onnx-opcounter"]

    def cell(self, tool: str, model: str) -> Cell:
        return self.cells.setdefault((tool, model), Cell(tool, model))

    def measure(self, models: list[str], runs: int) -> None:
        """Round-robin: run r of every tool on a model, then run r+1, ..."""
        a = self.args
        for model in models:
            for r in range(runs):
                for tool, template in self.tools.items():
                    c = self.cell(tool, model)
                    if c.failure or (r > 0 and sum(c.times) > a.slow_budget):
                        continue  # crashed, timed out, or slow enough that fewer runs will do
                    if tool in self.peers and model == str(EXTERNAL) and a.peer_mem_gib:
                        free = mem_available_gib()
                        if free is not None and free < a.peer_mem_gib:
                            c.failure = (f"skipped: {free:.1f} GiB of RAM available, and the peers took 6 to 12 GiB "
                                         f"on this model (--peer-mem-gib {a.peer_mem_gib:g})")
                            self.log(f"  {tool:15s} {Path(model).name}: {c.failure}")
                            continue
                    cmd = [model if part == "{model}" else part for part in template]
                    elapsed, rc, rss, tail, cpu = run_once(cmd, a.timeout)
                    if rc != 0:
                        c.failure = failure_text(rc, tail, a.timeout)
                        c.rss_kib.append(rss)
                        self.log(f"  {tool:15s} {Path(model).name}: {c.failure}")
                        continue
                    c.times.append(elapsed)
                    c.cpu.append(cpu)
                    c.rss_kib.append(rss)
                    if a.verbose:
                        self.log(f"  {tool:15s} {Path(model).name}: {elapsed:.3f} s, {rss / 1024:.0f} MiB")

    @staticmethod
    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    def fastest_peer(self, model: str) -> Cell | None:
        ok = [self.cells[(p, model)] for p in self.peers if (p, model) in self.cells and self.cells[(p, model)].ok]
        return min(ok, key=lambda c: c.median) if ok else None


def fmt_time(c: Cell | None) -> str:
    if c is None:
        return "-"
    if not c.ok:
        if c.failure and c.failure.startswith("skipped"):
            return "SKIPPED"
        return "TIMEOUT" if c.failure and c.failure.startswith("timed out") else "CRASH"
    n = f" (n={len(c.times)})" if len(c.times) < 3 else ""
    return f"{c.median:.3f}{n}"


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def light_models() -> list[str]:
    import onnx

    return sorted(glob.glob(os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light", "light_*.onnx")))


def node_count(path: str) -> int:
    import onnx

    return len(onnx.load(path, load_external_data=False).graph.node)


def help_and_imports(cnn: str, model: str, runs: int) -> dict:
    times = []
    for _ in range(runs):
        elapsed, rc, _, tail, _ = run_once([cnn, "--help"], 30)
        if rc != 0:
            return {"help_failure": failure_text(rc, tail, 30)}
        times.append(elapsed)
    imported = {}
    for label, argv in (("--help", ["--help"]), ("stats --format json", ["stats", model, "--format", "json"]),
                        ("stats (table)", ["stats", model])):
        proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "cnncli", *argv],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        mods = set(re.findall(r"\|\s+(\S+)\s*$", proc.stderr, re.M))
        imported[label] = sorted({m.split(".")[0] for m in mods} & {*FORBIDDEN_IMPORTS, "rich", "torch", "PIL"})
    return {"help_median": statistics.median(times), "help_runs": len(times), "imports": imported}


def make_nonmodel() -> None:
    """1 MiB of random bytes, then a sparse hole up to 1.2 GB: what cnn reads of it is random
    (its first bytes), and a reader that takes the file whole pays for all 1.2 GB, zeros or not,
    without the bench writing 1.2 GB to disk."""
    if NONMODEL.exists() and NONMODEL.stat().st_size == NONMODEL_BYTES:
        return
    NONMODEL.parent.mkdir(parents=True, exist_ok=True)
    with open(NONMODEL, "wb") as f:
        f.write(os.urandom(1 << 20))
        f.truncate(NONMODEL_BYTES)


def nonmodel_runs(cnn: str, runs: int, timeout: float) -> dict:
    """`cnn stats` on the 1.2 GB non-model: it must exit 1 (one-line error), fast and small."""
    make_nonmodel()
    times, rss = [], []
    for _ in range(runs):
        elapsed, rc, kib, tail, _ = run_once([cnn, "stats", str(NONMODEL)], timeout)
        if rc != 1:
            return {"nonmodel_failure": failure_text(rc, tail, timeout) if rc else "exit 0 on a non-model"}
        times.append(elapsed)
        rss.append(kib)
    return {"nonmodel_median": statistics.median(times), "nonmodel_runs": len(times), "nonmodel_rss_mib": max(rss) / 1024}


def default_peer_python() -> str:
    import importlib.util

    if importlib.util.find_spec("onnx_tool") and importlib.util.find_spec("onnx_opcounter"):
        return sys.executable
    return str(Path(sys.prefix).parent / "venv-bench" / "bin" / "python")


def byte_compile_cnncli() -> None:
    """Write cnncli's .pyc files, as `pip install` does (the peers' are written at install): an
    editable install run with PYTHONDONTWRITEBYTECODE=1 would otherwise compile every module
    on every run."""
    import compileall
    import importlib.util

    spec = importlib.util.find_spec("cnncli")
    if spec and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            compileall.compile_dir(folder, quiet=1)


def stale_install() -> str | None:
    """A note when the cnncli this Python imports is an installed copy that differs from the checkout."""
    import importlib.util

    spec = importlib.util.find_spec("cnncli")
    if not spec or not spec.submodule_search_locations:
        return "cnncli is not installed in this Python"
    installed = Path(list(spec.submodule_search_locations)[0]).resolve()
    source = HERE.parent / "cnncli"
    if installed == source.resolve():
        return None
    differ = [p.name for p in sorted(source.glob("*.py")) if not (installed / p.name).exists()
              or (installed / p.name).read_bytes() != p.read_bytes()]
    if differ:
        return (f"the cnncli installed at {installed} differs from this checkout ({', '.join(differ[:5])}"
                f"{', ...' if len(differ) > 5 else ''}): `pip install --no-deps --force-reinstall .` to time the checkout")
    return None


def machine() -> dict:
    cpu = ""
    try:
        cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "")
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu or platform.processor(), "python": platform.python_version(),
            "platform": platform.platform(), "date": time.strftime("%Y-%m-%d %H:%M %Z")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Benchmark `cnn stats` against onnx-tool and onnx-opcounter.")
    ap.add_argument("--quick", action="store_true", help="3 runs each instead of --runs")
    ap.add_argument("--runs", type=int, default=7, help="runs per tool and model (default 7)")
    ap.add_argument("--timeout", type=float, default=120, help="seconds before one run is killed (default 120)")
    ap.add_argument("--slow-budget", type=float, default=60,
                    help="stop repeating a tool on a model once its runs add up to this many seconds (default 60)")
    ap.add_argument("--peer-python", default=os.environ.get("CNN_BENCH_PEER_PYTHON") or default_peer_python(),
                    help="python of the venv with onnx-tool and onnx-opcounter (default: $CNN_BENCH_PEER_PYTHON, else "
                         "this python when it has them, else venv-bench beside this venv)")
    ap.add_argument("--cpu", action="store_true", help="show CPU seconds (user+sys) instead of wall seconds in the table")
    ap.add_argument("--no-peers", action="store_true", help="time cnn only")
    ap.add_argument("--peer-mem-gib", type=float, default=14,
                    help="run the peers on the 3 GiB model only when this much RAM is available (default 14; 0: always)")
    ap.add_argument("--only", choices=["light", "chain", "external", "nonmodel"], action="append",
                    help="run only these model sets")
    ap.add_argument("--make", action="store_true", help="run make_models.py first")
    ap.add_argument("--json", dest="json_out", metavar="FILE", help="also write every run to FILE as JSON")
    ap.add_argument("--strict", action="store_true", help="exit 1 if a goal is missed")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every run")
    args = ap.parse_args(argv)
    runs = 3 if args.quick else args.runs
    if args.no_peers:
        args.peer_python = None
    elif not Path(args.peer_python).exists():
        print(f"bench: no peer venv at {args.peer_python}; timing cnn only (see benchmarks/README.md)", file=sys.stderr)
        args.peer_python = None
    sets = args.only or ["light", "chain", "external", "nonmodel"]
    if args.make:
        subprocess.run([sys.executable, str(HERE / "make_models.py")], check=True)
    chains = [str(WORK / f"chain_{n}.onnx") for n in CHAIN_PAIRS]
    missing = [p for p in [*chains, str(EXTERNAL)] if not Path(p).exists()]
    if missing and ({"chain", "external"} & set(sets)):
        print(f"bench: {missing[0]} is missing: run `python benchmarks/make_models.py` (or pass --make)", file=sys.stderr)
        return 2

    note = stale_install()
    if note:
        print(f"bench: warning: {note}", file=sys.stderr)
    byte_compile_cnncli()
    bench = Bench(args)
    info = machine()
    load_before = os.getloadavg()
    started = time.time()
    lights = light_models() if "light" in sets else []
    # warm-up: one untimed run of each tool (byte-compiles, fills the page cache)
    warm = lights[0] if lights else (chains[0] if Path(chains[0]).exists() else str(ZFNET))
    for template in bench.tools.values():
        run_once([warm if p == "{model}" else p for p in template], args.timeout)
    bench.log(f"bench: {runs} runs each, load average {load_before[0]:.2f}")
    if lights:
        bench.log("bench: light models")
        bench.measure(lights, runs)
    if "chain" in sets:
        bench.log("bench: chains")
        bench.measure(chains, runs)
    if "external" in sets:
        bench.log("bench: 3 GiB external-data model")
        bench.measure([str(EXTERNAL)], runs)
    bench.log("bench: cnn --help and imports")
    extra = help_and_imports(bench.cnn, warm, max(runs, 5))
    if "nonmodel" in sets:
        bench.log("bench: a 1.2 GB file that is not a model")
        extra.update(nonmodel_runs(bench.cnn, max(runs, 3), args.timeout))
    load_after = os.getloadavg()

    # ---- report -------------------------------------------------------------------------
    tools = list(bench.tools)
    if args.cpu:  # every figure below in CPU seconds
        for c in bench.cells.values():
            c.times, c.cpu = c.cpu, c.times
    goals: list[tuple[str, bool | None, str]] = []
    out = [f"machine: {info['nproc']} CPUs, {info['cpu']}, Python {info['python']}; {info['date']}",
           f"load average (1 min): {load_before[0]:.2f} before, {load_after[0]:.2f} after; "
           f"{runs} runs each (median); figures in {'CPU (user+sys)' if args.cpu else 'wall-clock'} seconds; "
           f"bench took {time.time() - started:.0f} s", f"cnn: {bench.cnn}; peers: {args.peer_python or 'none'}", ""]
    header = ["model", "nodes", *[f"{t} s" for t in tools], "json/fastest", "table/fastest"]
    table = []
    models = [*lights, *(chains if "chain" in sets else []), *([str(EXTERNAL)] if "external" in sets else [])]
    worst = {"light": [None, None], "chain": [None, None]}
    for m in models:
        fastest = bench.fastest_peer(m)
        ratios = []
        for t in ("cnn json", "cnn table"):
            c = bench.cells.get((t, m))
            ratios.append(c.median / fastest.median if c and c.ok and fastest else None)
        name = Path(m).stem
        table.append([name, f"{node_count(m):,}", *[fmt_time(bench.cells.get((t, m))) for t in tools],
                      fmt_ratio(ratios[0]), fmt_ratio(ratios[1])])
        group = "light" if m in lights else ("chain" if m == chains[1] else None)
        if group:
            for i, r in enumerate(ratios):
                if r is not None and (worst[group][i] is None or r > worst[group][i]):
                    worst[group][i] = r
    widths = [max(len(str(x)) for x in col) for col in zip(header, *table)]
    out.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    out.append("  ".join("-" * w for w in widths))
    for row in table:
        out.append("  ".join(str(x).rjust(w) if i else str(x).ljust(w) for i, (x, w) in enumerate(zip(row, widths))))
    out.append("")

    # peak memory and failures
    for m in models:
        for t in tools:
            c = bench.cells.get((t, m))
            if c and c.failure:
                out.append(f"{t} on {Path(m).name}: {c.failure}")
    if "external" in sets:
        out.append("3 GiB external-data model, peak RSS: " + ", ".join(
            f"{t} {bench.cells[(t, str(EXTERNAL))].peak_mib:.0f} MiB" for t in tools
            if (t, str(EXTERNAL)) in bench.cells and bench.cells[(t, str(EXTERNAL))].rss_kib))
        for t in ("cnn json", "cnn table"):
            c = bench.cells.get((t, str(EXTERNAL)))
            if c:
                ok = c.ok and c.median < GOAL_EXT_SECONDS and c.peak_mib < GOAL_EXT_RSS_MIB
                goals.append((f"external 3 GiB: {t} < {GOAL_EXT_SECONDS:.0f} s and < {GOAL_EXT_RSS_MIB} MiB",
                              ok, f"{fmt_time(c)} s, {c.peak_mib:.0f} MiB" if c.rss_kib else c.failure or "-"))
    if "chain" in sets:
        scal = []
        for t in tools:
            a, b, c = (bench.cells.get((t, p)) for p in chains)
            r1 = b.median / a.median if a and b and a.ok and b.ok else None
            r2 = c.median / b.median if b and c and b.ok and c.ok else None
            scal.append(f"{t} {fmt_ratio(r1)} / {fmt_ratio(r2)}")
            if t.startswith("cnn"):
                goals.append((f"chain scaling: {t} t(16k pairs)/t(8k pairs) <= {GOAL_SCALING}",
                              None if r2 is None else r2 <= GOAL_SCALING, fmt_ratio(r2)))
        out.append("chain scaling t(8k)/t(4k) / t(16k)/t(8k) pairs: " + "; ".join(scal))
    for group, label in (("light", "every light model"), ("chain", "16,000-node chain (8,000 pairs)")):
        for i, t in enumerate(("cnn json", "cnn table")):
            w = worst[group][i]
            if (group == "light" and lights) or (group == "chain" and "chain" in sets):
                goals.append((f"{label}: {t} no slower than fastest peer (ratio <= {GOAL_RATIO:.2f})",
                              None if w is None else w <= GOAL_RATIO, f"worst ratio {fmt_ratio(w)}"))
    if "help_median" in extra:
        goals.append((f"cnn --help < {GOAL_HELP_SECONDS} s", extra["help_median"] < GOAL_HELP_SECONDS,
                      f"{extra['help_median']:.3f} s (median of {extra['help_runs']})"))
        bad = {k: [m for m in v if m in FORBIDDEN_IMPORTS] for k, v in extra["imports"].items()}
        goals.append(("stats and --help import neither onnxruntime nor matplotlib", not any(bad.values()),
                      "; ".join(f"{k}: {', '.join(v) or 'none'}" for k, v in extra["imports"].items())
                      + " (of onnxruntime, matplotlib, rich, torch, PIL)"))
    else:
        goals.append(("cnn --help", False, extra.get("help_failure", "?")))
    if "nonmodel_median" in extra:
        goals.append((f"1.2 GB non-model refused < {GOAL_NONMODEL_SECONDS} s and < {GOAL_NONMODEL_RSS_MIB} MiB",
                      extra["nonmodel_median"] < GOAL_NONMODEL_SECONDS and extra["nonmodel_rss_mib"] < GOAL_NONMODEL_RSS_MIB,
                      f"{extra['nonmodel_median']:.3f} s (median of {extra['nonmodel_runs']}), "
                      f"{extra['nonmodel_rss_mib']:.0f} MiB"))
    elif "nonmodel_failure" in extra:
        goals.append(("1.2 GB non-model refused", False, extra["nonmodel_failure"]))
    out.append("")
    out.append("goals:")
    for text, ok, detail in goals:
        mark = "MET " if ok else ("MISS" if ok is False else "n/a ")
        out.append(f"  [{mark}] {text}: {detail}")
    print("\n".join(out))

    if args.json_out:
        Path(args.json_out).write_text(json.dumps({
            "machine": info, "load_before": load_before, "load_after": load_after, "runs": runs,
            "cells": [asdict(c) for c in bench.cells.values()], "extra": extra,
            "goals": [{"goal": g, "met": ok, "detail": d} for g, ok, d in goals],
        }, indent=2) + "\n")
    return 1 if args.strict and any(ok is False for _, ok, _ in goals) else 0


if __name__ == "__main__":
    sys.exit(main())
