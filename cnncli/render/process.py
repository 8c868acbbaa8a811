"""The `cnn` process's standard streams and termination signals (set up once by ``cli.main``).

- A standard stream closed at start (``<&-``, ``>&-``, ``2>&-``) gets /dev/null on its file
  descriptor, so no file opened later takes fd 0, 1 or 2 (a PNG must not become stdout);
  ``sys.stdin`` and ``sys.stdout`` stay ``None`` there (the commands say the stream is closed).
- stderr loses what it cannot take (a full device ``2>/dev/full``, a closed stderr, a reader
  gone): messages are lost, never stdout's data or the exit code, and click never falls back to
  writing its ``Error:`` line on stdout.
- SIGTERM (``kill``, systemd, CI) and SIGHUP end the run as Ctrl-C does: :class:`Terminated`
  (a BaseException, like KeyboardInterrupt) is raised in the main thread, so every ``finally``
  and atomic write cleans up; the CLI maps it to 128 + the signal's number and one line.
- Where the cache folder (XDG_CACHE_HOME, ~/.cache) cannot be written, a temporary one: onnxruntime
  prints a warning on import otherwise. Such folders are removed by
  :func:`cnncli.atomic.remove_run_folders`, which the CLI calls before its ``os._exit``.
"""

from __future__ import annotations

import io
import os
import signal
import sys
import threading
import time
from pathlib import Path

from cnncli.atomic import can_write_folder, run_folder

# the signals that end a run like Ctrl-C, and the line each prints
SIGNAL_LINES = {signal.SIGTERM: "Terminated.", signal.SIGHUP: "Hangup."}

class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived (``signum`` says which). A BaseException, as KeyboardInterrupt
    is: ``except Exception`` does not swallow it and clean-ups run."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def line(self) -> str:
        return SIGNAL_LINES.get(self.signum, "Terminated.")


def _raise_terminated(signum, frame) -> None:
    # a second signal while the run winds down must not cut its clean-up short
    for other in SIGNAL_LINES:
        signal.signal(other, signal.SIG_IGN)
    raise Terminated(signum)


def install_signal_handlers() -> None:
    """SIGTERM and SIGHUP raise :class:`Terminated` in the main thread; a signal the parent set
    to be ignored (``nohup``) stays ignored."""
    for signum in SIGNAL_LINES:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _raise_terminated)


def wind_down(seconds: float = 5.0) -> None:
    """After Ctrl-C or SIGTERM: ignore further signals, and give the other (non-daemon) threads up
    to ``seconds`` in all to end. A writer thread may be halfway through a file (an atomic write
    that completes or removes its temporary file), which ``os._exit`` would cut short; a thread
    pool joins its workers when it closes, but not one it was starting when the signal came."""
    for signum in (signal.SIGINT, *SIGNAL_LINES):
        signal.signal(signum, signal.SIG_IGN)
    deadline = time.monotonic() + seconds
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))


def reserve_standard_fds() -> None:
    """/dev/null on each of fd 0, 1 and 2 that is closed."""
    for fd, flags in ((0, os.O_RDONLY), (1, os.O_WRONLY), (2, os.O_WRONLY)):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        null = os.open(os.devnull, flags)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)


class _LossyWriter(io.FileIO):
    """A file descriptor whose failed writes (ENOSPC, EPIPE, EIO, EAGAIN) count as written."""

    def write(self, data) -> int:
        try:
            written = super().write(data)
        except OSError:
            return len(data)
        return len(data) if written is None else written


def lossy_stderr(fd: int = 2) -> io.TextIOWrapper:
    """A text stream on ``fd`` in stderr's encoding that never raises for a failed write."""
    old = sys.stderr
    encoding = getattr(old, "encoding", None) or "utf-8"
    errors = getattr(old, "errors", None) or "backslashreplace"
    raw = _LossyWriter(fd, "w", closefd=False)
    return io.TextIOWrapper(io.BufferedWriter(raw), encoding=encoding, errors=errors, line_buffering=True,
                            write_through=True)


def usable_cache_home() -> None:
    """onnxruntime, when imported, keeps a telemetry id under $XDG_CACHE_HOME (~/.cache) and
    prints a colour warning line where it cannot; fontconfig keeps its cache there too. Where
    that folder cannot be written, a temporary one for this run (removed when it ends)."""
    try:
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    except (RuntimeError, KeyError):  # no HOME and no passwd entry
        cache = None
    if cache is None or not can_write_folder(cache):
        os.environ["XDG_CACHE_HOME"] = run_folder("cnncli-cache-")


def prepare() -> None:
    """Everything above, for the CLI process (never for the Python API: the caller's process
    keeps its streams, signals and environment)."""
    reserve_standard_fds()
    sys.stderr = lossy_stderr()
    install_signal_handlers()
    usable_cache_home()


def say(line: str) -> None:
    """One line on stderr, whatever state stderr is in."""
    try:
        sys.stderr.write(f"{line}\n")
    except (OSError, ValueError, AttributeError):
        pass


def flushed(code: int) -> int:
    """The exit code once stdout and stderr are flushed: 1 (with one line) where stdout's data
    could not all get out (a full disk, an I/O error); a reader that left (`| head`) is a normal end."""
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        pass
    except OSError as exc:
        if not code:
            say(f"Error: cannot write to standard output: {exc.strerror or exc}")
            code = 1
    try:
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass
    return code
