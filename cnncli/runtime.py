"""onnxruntime sessions: provider choice and quiet logging."""

from __future__ import annotations

from cnncli.errors import CnnError

PROVIDER_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


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


def make_session(model_bytes: bytes, provider: str, verbose: bool = False, threads: int = 0, spin: bool = True):
    """An onnxruntime session. ``spin=False`` stops idle worker threads from busy-waiting: for
    sessions that run in turn (the projector's forward and reverse), whose spinning threads
    otherwise take the cores from each other (1.6–1.8× slower on 2 cores)."""
    import onnxruntime as ort

    if not verbose:
        ort.set_default_logger_severity(3)
    options = ort.SessionOptions()
    options.log_severity_level = 0 if verbose else 3
    if threads:
        options.intra_op_num_threads = threads
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = [PROVIDER_NAMES[provider]]
    if provider == "cuda":
        providers.append(PROVIDER_NAMES["cpu"])
    try:
        return ort.InferenceSession(model_bytes, sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/NotImplemented types
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CnnError(f"onnxruntime cannot load the model: {msg}") from None
