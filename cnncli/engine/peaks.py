"""This machine's peaks, for `cnn profile`'s roofline: the MACs per second onnxruntime reaches on a
large matmul, and the bytes per second it moves through a streaming elementwise op (a memory
copy that reads and writes every byte once). Both are measured on the provider being profiled,
with its inputs and outputs bound on the device (nothing crosses the PCIe bus on CUDA), and kept
in the user cache folder (``$XDG_CACHE_HOME/cnncli/peaks.json``, else ``~/.cache/…``) under a key
naming the machine (host, CPU model, cores this process may use), onnxruntime's version and the
provider, so they are measured once per machine.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

# matmul side and streamed elements per provider: on a CPU a 256×256 matmul (its operands stay in
# cache, so it shows the arithmetic peak; it takes under a millisecond, and a busy machine has
# quiet moments that long) and 64 MiB moved
_SIZES = {"cpu": (256, 8 * 2**20), "cuda": (4096, 64 * 2**20)}
_REPEATS = 5
_BUDGET_S = 0.3  # each micro-benchmark repeats for this long at least (up to 1,000 runs)


@dataclass(frozen=True)
class Peaks:
    gmacs_per_s: float  # matmul, best of the repeats
    gbytes_per_s: float  # bytes read + written per second by the streaming op, best of the repeats
    provider: str
    cached: bool = False  # read from the cache file, not measured now

    @property
    def ridge(self) -> float:
        """MACs per byte where a layer stops being memory-bound."""
        return self.gmacs_per_s / self.gbytes_per_s


def machine_peaks(provider: str, remeasure: bool = False) -> Peaks:
    """The peaks of ``provider`` on this machine: from the cache, else (or with ``remeasure``)
    measured (about 0.7 s on a CPU) and cached. A cache folder that cannot be written only means
    measuring again next time."""
    key = machine_key(provider)
    path = _cache_file()
    cached = _read_cache(path).get(key) if path and not remeasure else None
    if isinstance(cached, dict):
        try:
            return Peaks(float(cached["gmacs_per_s"]), float(cached["gbytes_per_s"]), provider, cached=True)
        except (KeyError, TypeError, ValueError):
            pass
    peaks = measure(provider)
    if path is not None:
        _write_cache(path, key, peaks)
    return peaks


def machine_key(provider: str) -> str:
    import onnxruntime as ort

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return f"{platform.node()}|{_cpu_model()}|{cores} cores|onnxruntime {ort.__version__}|{provider}"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure(provider: str) -> Peaks:
    from onnx import TensorProto, helper

    n, elems = _SIZES.get(provider, _SIZES["cpu"])
    f = TensorProto.FLOAT
    matmul = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "peak_matmul",
                               [helper.make_tensor_value_info("a", f, [n, n]), helper.make_tensor_value_info("b", f, [n, n])],
                               [helper.make_tensor_value_info("c", f, [n, n])])
    stream = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["y"])], "peak_copy",
                               [helper.make_tensor_value_info("x", f, [elems])], [helper.make_tensor_value_info("y", f, [elems])],
                               [helper.make_tensor("two", f, [], [2.0])])
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    seconds = _best(matmul, provider, {"a": a, "b": a}, ("c", (n, n)))
    copy = _best(stream, provider, {"x": np.full(elems, 0.5, dtype=np.float32)}, ("y", (elems,)))
    return Peaks(n ** 3 / seconds / 1e9, 2 * 4 * elems / copy / 1e9, provider)


def _best(graph, provider: str, feeds: dict, output: tuple[str, tuple]) -> float:
    """Seconds of the fastest of a few runs of ``graph``, inputs and output bound on the device."""
    import onnxruntime as ort
    from onnx import helper

    from cnncli.runtime.sessions import make_session

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    session = make_session(model.SerializeToString(), provider).session
    device = "cuda" if provider == "cuda" else "cpu"
    binding = session.io_binding()
    for name, value in feeds.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, device, 0))
    binding.bind_ortvalue_output(output[0], ort.OrtValue.ortvalue_from_shape_and_type(output[1], np.float32, device, 0))
    best, runs = float("inf"), 0
    session.run_with_iobinding(binding)  # warm-up
    begin = time.perf_counter()
    # the best of many: a busy machine has quiet moments
    while runs < _REPEATS or (time.perf_counter() - begin < _BUDGET_S and runs < 1000):
        binding.synchronize_inputs()
        start = time.perf_counter()
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        best, runs = min(best, time.perf_counter() - start), runs + 1
    return max(best, 1e-9)


def _cache_file() -> Path | None:
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = str(Path.home() / ".cache")
        except (RuntimeError, KeyError):
            return None
    return Path(base) / "cnncli" / "peaks.json"


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, key: str, peaks: Peaks) -> None:
    from cnncli.atomic import write_bytes_atomic
    from cnncli.errors import CnnError

    data = _read_cache(path)
    data[key] = {k: v for k, v in asdict(peaks).items() if k in ("gmacs_per_s", "gbytes_per_s")}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, json.dumps(data, indent=1, sort_keys=True).encode())
    except (OSError, CnnError):
        pass
