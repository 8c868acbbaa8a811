"""The Ray runtime of `cnn top --engine ray`: joined or started, kept quiet, and given back.

Ray's driver prints on its own, and not all of it to stderr: a thread it starts in ``ray.init``
prints every error the cluster publishes (a worker that died, a task retried) as ``(raylet) …``
lines on **stdout** (``ray._private.worker.listen_error_messages``); ``log_to_driver``
forwards the workers' output there too, and so does Ray Client's log stream. While a run uses the
runtime those lines go to stderr with ``verbose``, nowhere without (`RayRuntime` swaps the
functions that print them; Ray's version is pinned to 2.60).

``ray.init`` also takes over SIGTERM: its Python handler exits with status 15 and the C++ core
installs a handler that prints a native stack. The handlers the process had before (the CLI's,
which end a run with one line) are put back as soon as ``ray.init`` returns, and a runtime
started here is shut down however the run ends, a signal's exception included, so no raylet or
GCS process outlives it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import sys
import threading
from pathlib import Path

from cnncli.errors import CnnError

# the handlers ray.init replaces (SIGTERM) or might; put back after it
_HANDLED = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name))


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise CnnError("--engine ray needs Ray: pip install 'cnncli[ray]'") from None
    return ray


class RayRuntime:
    """Join the cluster at ``address`` ('auto', 'ray://host:10001', …) or start an embedded local
    runtime; leave a runtime the caller already started alone. Quiet unless ``verbose``: Ray's
    lines go to stderr then, never to stdout."""

    def __init__(self, address: str | None, verbose: bool):
        self.address, self.verbose, self.started = address, verbose, False
        self._undo = contextlib.ExitStack()

    def __enter__(self):
        ray = import_ray()
        self._undo.enter_context(_driver_prints(verbose=self.verbose))
        try:
            if not ray.is_initialized():
                self._start(ray)
        except BaseException:
            self._undo.close()
            raise
        return ray

    def _start(self, ray) -> None:
        if not self.verbose:  # the driver's own core worker logs to stderr (C++ glog)
            os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        kwargs = {"log_to_driver": self.verbose, "logging_level": logging.INFO if self.verbose else logging.ERROR}
        if self.address is None:
            kwargs["include_dashboard"] = False
            self._undo.enter_context(_token_without_home())
        try:
            with _kept_signal_handlers(), _quiet_fd2(not self.verbose):  # C++ start-up lines
                ray.init(address=self.address, **kwargs)
        except (ConnectionError, ValueError, RuntimeError, TimeoutError, OSError) as exc:
            _shutdown(ray, self.verbose)  # what was started before the failure
            where = f"the Ray cluster at '{self.address}'" if self.address else "a local Ray runtime"
            raise CnnError(f"cannot start or join {where}: {first_line(exc)}") from None
        except BaseException:  # a signal's exception (SIGTERM, Ctrl-C) in the middle of ray.init
            _shutdown(ray, self.verbose)
            raise
        self.started = True

    def __exit__(self, *exc):
        try:
            if self.started:
                import ray

                _shutdown(ray, self.verbose)
        finally:
            self._undo.close()
        return False


def _shutdown(ray, verbose: bool) -> None:
    """``ray.shutdown()``, which stops the processes of a runtime started here (also one that
    ``ray.init`` left half-started), with Ray's C++ lines off stderr unless ``verbose``."""
    with _quiet_fd2(not verbose):
        ray.shutdown()


@contextlib.contextmanager
def _kept_signal_handlers():
    """Put back the signal handlers ``ray.init`` replaced: Ray's SIGTERM handler exits with
    status 15, and the C++ core's handler (installed with sigaction, which ``signal.getsignal``
    does not see) prints a native stack; ``signal.signal`` installs the saved one over both.
    A SIGTERM that arrived while Ray's own handler was in place (``SystemExit(15)``) is handed
    to the saved handler, as it would have been without Ray."""
    if threading.current_thread() is not threading.main_thread():  # Ray sets none then
        yield
        return
    saved = {sig: signal.getsignal(sig) for sig in _HANDLED}
    try:
        yield
    except SystemExit as exc:
        handler = saved.get(getattr(signal, "SIGTERM", None))
        if exc.code == getattr(signal, "SIGTERM", None) and callable(handler):
            _restore(saved)
            handler(signal.SIGTERM, None)
        raise
    finally:
        _restore(saved)


def _restore(saved: dict) -> None:
    """The saved handlers back, except where a signal is now ignored: the CLI's handler ignores
    a second signal while the run it ended winds down."""
    for sig, handler in saved.items():
        if handler is not None and signal.getsignal(sig) is not signal.SIG_IGN:  # None: set outside Python
            signal.signal(sig, handler)


@contextlib.contextmanager
def _driver_prints(verbose: bool):
    """Ray's driver-side printing of cluster errors and worker output sent to stderr with
    ``verbose`` and dropped without, while the runtime is used; Ray's functions put back after:
    ``print_to_stdstream`` (``(raylet) …``, ``(MapWorker pid=…) …``, stdout's lines to stdout) and,
    through Ray Client, ``LogstreamClient.stdstream`` (the cluster's stdout lines to stdout)."""
    with contextlib.ExitStack() as undo:
        try:
            from ray._private import worker
            from ray.util.client.logsclient import LogstreamClient
        except ImportError:
            yield
            return
        original = getattr(worker, "print_to_stdstream", None)
        if original is not None:
            def to_stderr(data, ignore_prefix: bool = False):
                if verbose:
                    original({**data, "is_err": True}, ignore_prefix)

            undo.enter_context(_swapped(worker, "print_to_stdstream", to_stderr))
        if hasattr(LogstreamClient, "stdstream"):
            def stdstream(self, level: int, msg: str):
                if verbose:
                    print(msg, file=sys.stderr, end="")

            undo.enter_context(_swapped(LogstreamClient, "stdstream", stdstream))
        yield


@contextlib.contextmanager
def _swapped(owner, name: str, value):
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


@contextlib.contextmanager
def _token_without_home():
    """An embedded runtime uses Ray's token authentication; Ray writes its token to
    ``~/.ray/auth_token`` when there is none, and a traceback when it cannot (a read-only HOME,
    ``~/.ray`` not a folder). Then the token is handed to Ray (and the runtime's processes) in
    ``RAY_AUTH_TOKEN`` for the run instead, and taken away after."""
    env = os.environ
    if any(env.get(name) for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")) or \
            env.get("RAY_AUTH_MODE", "token").lower() != "token" or _token_file_usable():
        yield
        return
    env["RAY_AUTH_TOKEN"] = _run_token()
    try:
        yield
    finally:
        env.pop("RAY_AUTH_TOKEN", None)


_TOKENS: list[str] = []


def _run_token() -> str:
    """One token per process: Ray's C++ side keeps the first token it read."""
    if not _TOKENS:
        _TOKENS.append(secrets.token_hex(32))
    return _TOKENS[0]


def _token_file_usable() -> bool:
    """Whether ``~/.ray/auth_token`` exists or Ray could create it."""
    try:
        home = Path.home()
    except (RuntimeError, KeyError):
        return False
    token = home / ".ray" / "auth_token"
    try:
        if token.exists() or token.is_symlink():
            return token.is_file() and os.access(token, os.R_OK)
        folder = token.parent if token.parent.exists() else home
        return folder.is_dir() and os.access(folder, os.W_OK) and not _read_only_fs(folder)
    except OSError:  # a folder on the way that cannot be searched
        return False


def _read_only_fs(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


@contextlib.contextmanager
def _quiet_fd2(quiet: bool):
    """Send file descriptor 2 to /dev/null meanwhile: Ray's C++ core writes there directly."""
    saved = _keep_fd2() if quiet else None
    if saved is None:
        yield
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _keep_fd2() -> int | None:
    """A copy of fd 2 (stderr flushed first); None where there is no fd 2."""
    try:
        if sys.stderr is not None:
            sys.stderr.flush()
        return os.dup(2)
    except (OSError, ValueError):
        return None


def first_line(exc: BaseException) -> str:
    """The first line of a failure's text, cleaned as every onnxruntime message is (no
    '[ONNXRuntimeError]' prefix, colour codes or C++ source locations: a worker's onnxruntime
    failure reaches the user through Ray's exception text)."""
    from cnncli.runtime.sessions import ort_message

    return ort_message(exc)
