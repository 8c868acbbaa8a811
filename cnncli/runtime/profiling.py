"""onnxruntime's profiler: run a model ``warmup + runs`` times with profiling on and read the trace
back as per-run kernel times, beside the graph onnxruntime actually ran (its optimised model).

The trace (a Chrome trace-event JSON file) holds, for every run, one ``Node`` event per kernel
(``<node name>_kernel_time``, with ``op_name`` and ``provider`` in its args) and then one
``Session`` event ``model_run`` for the whole run. Kernel names are those of the optimised
graph, which onnxruntime writes when ``SessionOptions.optimized_model_filepath`` is set; the join
to the original nodes is cnncli.engine.profile_join's.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Callable

import onnx

from cnncli.runtime.sessions import make_session

_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
           "all": "ORT_ENABLE_ALL"}
_KERNEL = "_kernel_time"


@dataclass
class Trace:
    """What one profiled session measured. Times in milliseconds; ``kernels[name][i]`` is the time
    of the optimised graph's node ``name`` in timed run ``i`` (the sum of its events in that run)."""

    provider: str
    run_ms: list[float]  # each timed run, whole (onnxruntime's model_run)
    kernels: dict[str, list[float]]
    kernel_ops: dict[str, str]  # kernel name -> the op onnxruntime ran ("FusedConv", "Conv")
    kernel_providers: dict[str, str]  # kernel name -> the execution provider it ran on
    optimized: onnx.GraphProto  # the graph onnxruntime ran (weights left out)
    kernel_domains: dict[str, str] = field(default_factory=dict)  # kernel name -> its op's domain
    setup_s: float = 0.0  # creating the session, seconds (outside the runs)
    notes: list[str] = field(default_factory=list)


def level(name: str):
    import onnxruntime as ort

    return getattr(ort.GraphOptimizationLevel, _LEVELS[name])


def profile_runs(model_bytes: bytes | str, feeds: dict, provider: str, opt_level: str, warmup: int, runs: int,
                 verbose: bool = False, progress: Callable[[int, int], None] | None = None) -> Trace:
    """Run the model (its bytes, or the path of a file onnxruntime may read as it is) ``warmup +
    runs`` times on ``provider`` with profiling on; the warm-up runs are left out of the figures."""
    import time

    with tempfile.TemporaryDirectory(prefix="cnncli-profile-") as tmp:
        optimized_path = os.path.join(tmp, "optimized.onnx")

        def configure(options) -> None:
            options.graph_optimization_level = level(opt_level)
            options.enable_profiling = True
            options.profile_file_prefix = os.path.join(tmp, "trace")
            options.optimized_model_filepath = optimized_path
            # the weights go to a file of their own, which is never read back: the graph is all the join needs
            options.add_session_config_entry("session.optimized_model_external_initializers_file_name", "weights.bin")
            options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "64")

        start = time.perf_counter()
        session = make_session(model_bytes, provider, verbose=verbose, configure=configure)
        setup = time.perf_counter() - start
        total = warmup + runs
        for i in range(total):
            session.run(None, feeds)
            if progress is not None:
                progress(i + 1, total)
        trace_file = session.session.end_profiling()
        with open(trace_file, encoding="utf-8") as f:
            events = json.load(f)
        graph = _optimized_graph(optimized_path)
    return _read(events, warmup, provider, graph, setup)


def _optimized_graph(path: str) -> onnx.GraphProto:
    if not os.path.exists(path):  # an execution provider that compiles the graph may write none
        return onnx.GraphProto()
    return onnx.load(path, load_external_data=False).graph


def _read(events: list, warmup: int, provider: str, graph: onnx.GraphProto, setup: float) -> Trace:
    """Split the events into runs (each run's kernel events come before its model_run event)."""
    runs: list[dict[str, float]] = []
    run_ms: list[float] = []
    ops: dict[str, str] = {}
    providers: dict[str, str] = {}
    current: dict[str, float] = {}
    for e in events:
        cat, name = e.get("cat"), e.get("name", "")
        if cat == "Node" and name.endswith(_KERNEL):
            kernel = name[: -len(_KERNEL)]
            current[kernel] = current.get(kernel, 0.0) + e.get("dur", 0) / 1000.0
            args = e.get("args") or {}
            ops.setdefault(kernel, args.get("op_name", ""))
            providers.setdefault(kernel, args.get("provider", ""))
        elif cat == "Session" and name == "model_run":
            runs.append(current)
            run_ms.append(e.get("dur", 0) / 1000.0)
            current = {}
    runs, run_ms = runs[warmup:], run_ms[warmup:]
    names = list(dict.fromkeys(k for r in runs for k in r))
    kernels = {k: [r.get(k, 0.0) for r in runs] for k in names}
    domains = {n.name: n.domain for n in graph.node}
    return Trace(provider, run_ms, kernels, {k: ops[k] for k in names}, {k: providers[k] for k in names}, graph,
                 {k: domains.get(k, "") for k in names}, setup)
