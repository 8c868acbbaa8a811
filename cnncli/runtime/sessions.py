"""onnxruntime sessions: provider choice, quiet logging, inputs fed in the model's own dtype, and
onnxruntime's failures turned into one-line errors."""

from __future__ import annotations

import re
import warnings

import numpy as np

from cnncli.errors import CnnError

PROVIDER_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}

# onnxruntime's type strings for the float inputs cnncli casts its float32 images and signals to
_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*")
# A C++ source location and the function it names, as onnxruntime puts them before its message:
# "/onnxruntime_src/…/reshape_helper.h:91 onnxruntime::ReshapeHelper::ReshapeHelper(const …&, bool) ",
# "model_load_utils.h:46 void onnxruntime::…::ValidateOpsetForDomain(const std::unordered_map<…>&, int) ",
# "matmul_helper.h:59 Compute " (a short function name). A name is one token, template arguments
# included; the message after it (which may hold parentheses) is kept.
_NAME = r"(?:[\w:~*&]|<[^<>()]*(?:<[^<>()]*(?:<[^<>()]*>[^<>()]*)*>[^<>()]*)*>)+"
_SOURCE_LOCATION = re.compile(
    r"(?:/?[\w.+-]+/)*[\w+-]+(?:\.[\w+-]+)*\.(?:h|hh|hpp|hxx|c|cc|cpp|cxx|cu|cuh|inc|inl):\d+\s+"
    rf"(?:(?:{_NAME}\s+){{0,2}}{_NAME}\((?:[^()]|\([^()]*\))*\)(?:\s*const)?\s*|{_NAME}\s+)?")


class CnnRuntimeWarning(UserWarning):
    """A warning about a run that goes on (the CLI prints it as one `Warning:` line)."""


class RunError(CnnError):
    """An onnxruntime run failed; ``detail`` is onnxruntime's message as one plain line."""

    def __init__(self, detail: str):
        super().__init__(f"onnxruntime failed: {detail}")
        self.detail = detail


def ort_message(exc: BaseException) -> str:
    """onnxruntime's exception text as one plain line: the first line, without colour codes, the
    '[ONNXRuntimeError] : 1 : FAIL :' prefix and C++ source locations."""
    if isinstance(exc, RunError):
        return exc.detail
    text = _ANSI.sub("", str(exc)).strip()
    line = text.splitlines()[0].strip() if text else type(exc).__name__
    line = _ORT_PREFIX.sub("", line)
    line = _SOURCE_LOCATION.sub("", line)
    return line.strip() or type(exc).__name__


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def resolve_provider(choice: str) -> str:
    """'auto' takes CUDA when onnxruntime offers it; 'cuda' without it is an error."""
    available = available_providers()
    if choice == "auto":
        return "cuda" if PROVIDER_NAMES["cuda"] in available else "cpu"
    if PROVIDER_NAMES[choice] not in available:
        raise CnnError(
            f"provider '{choice}' is not available in this onnxruntime (available: {', '.join(available)}); "
            "install the gpu extra (onnxruntime-gpu) on a machine with CUDA"
        )
    return choice


def make_session(model_bytes: bytes, provider: str, verbose: bool = False, threads: int = 0, spin: bool = True,
                 configure=None) -> "Session":
    """An onnxruntime session (wrapped in :class:`Session`). ``spin=False`` stops idle worker
    threads from busy-waiting: for sessions that run in turn (the projector's forward and reverse),
    whose spinning threads otherwise take the cores from each other (1.6–1.8× slower on 2 cores).
    ``configure(options)``, when given, sets more of the SessionOptions (`cnn profile`: profiling,
    the optimisation level).

    Unless ``verbose``, onnxruntime logs nothing (severity 4, fatal only): its own error lines
    (``[E:onnxruntime:…]``, in colour) would come before cnncli's one-line error."""
    import onnxruntime as ort

    if not verbose:
        ort.set_default_logger_severity(4)
    options = ort.SessionOptions()
    options.log_severity_level = 0 if verbose else 4
    if threads:
        options.intra_op_num_threads = threads
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if configure is not None:
        configure(options)
    providers = [PROVIDER_NAMES[provider]]
    if provider == "cuda":
        providers.append(PROVIDER_NAMES["cpu"])
    try:
        session = ort.InferenceSession(model_bytes, sess_options=options, providers=providers)
    except MemoryError:
        raise CnnError("not enough memory to load the model into onnxruntime") from None
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/NotImplemented types
        raise CnnError(f"onnxruntime cannot load the model: {ort_message(exc)}") from None
    return Session(session, verbose)


class Session:
    """An onnxruntime session whose ``run`` feeds every float input in the dtype the model
    declares (a float16 model gets float16), returns float16 outputs as float32, raises
    :class:`RunError` (a CnnError: onnxruntime's message as one line) when a run fails, and,
    when a run of several rows fails but one row alone runs (a model whose symbolic batch is
    pinned to 1 inside, by a Reshape say), runs one row at a time from then on, with one warning."""

    def __init__(self, session, verbose: bool = False):
        import onnxruntime as ort

        self.session = session
        self.one_row_at_a_time = False
        self._types = {i.name: _FLOAT_TYPES.get(i.type) for i in session.get_inputs()}
        self._options = ort.RunOptions()
        self._options.log_severity_level = 0 if verbose else 4

    def run(self, output_names, feeds: dict, run_options=None) -> list[np.ndarray]:
        feeds = {name: self._cast(name, value) for name, value in feeds.items()}
        rows = _common_rows(feeds)
        if self.one_row_at_a_time and rows > 1:
            return self._by_rows(output_names, feeds, rows)
        try:
            return self._run(output_names, feeds, run_options)
        except RunError as exc:
            if rows <= 1:
                raise
            try:
                first = self._run(output_names, _rows(feeds, 0, 1))
            except RunError:
                raise exc from None
            self.one_row_at_a_time = True
            warnings.warn(CnnRuntimeWarning(
                "the model does not run on several images at once (its batch dim is fixed inside it); "
                "running one at a time"))
            return self._by_rows(output_names, feeds, rows, first)

    def _cast(self, name: str, value):
        want = self._types.get(name)
        value = np.asarray(value)
        if want is not None and value.dtype != want and np.issubdtype(value.dtype, np.floating):
            return value.astype(want)
        return value

    def _run(self, output_names, feeds, run_options=None) -> list[np.ndarray]:
        try:
            outs = self.session.run(output_names, feeds, run_options or self._options)
        except MemoryError:
            raise RunError("not enough memory") from None
        except Exception as exc:
            raise RunError(ort_message(exc)) from None
        return [o.astype(np.float32) if isinstance(o, np.ndarray) and o.dtype == np.float16 else o for o in outs]

    def _by_rows(self, output_names, feeds, rows: int, first=None) -> list[np.ndarray]:
        parts = [first] if first is not None else []
        for i in range(len(parts), rows):
            parts.append(self._run(output_names, _rows(feeds, i, i + 1)))
        return [np.concatenate([p[j] for p in parts], axis=0) for j in range(len(parts[0]))]


def _common_rows(feeds: dict) -> int:
    """The leading dim all feeds share (more than one row only when every feed has it), else 1."""
    sizes = {v.shape[0] if v.ndim else 0 for v in feeds.values()}
    return sizes.pop() if len(sizes) == 1 and feeds else 1


def _rows(feeds: dict, start: int, stop: int) -> dict:
    return {name: value[start:stop] for name, value in feeds.items()}


def float32_view(graph):
    """``graph`` with float16 and float64 tensors typed float32: what the reverse graph (which
    cnncli runs in float32 whatever the model's float type) is built from."""
    from dataclasses import replace

    from onnx import TensorProto

    wider = {TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
    if not any(t in wider for t in graph.types.values()):
        return graph
    return replace(graph, types={k: TensorProto.FLOAT if t in wider else t for k, t in graph.types.items()})


def as_float32(value):
    """A float array as float32 (other arrays, and None, as they are)."""
    if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating) and value.dtype != np.float32:
        return value.astype(np.float32)
    return value
