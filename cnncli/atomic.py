"""Atomic file output: write to a temporary file beside the target, then rename."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from cnncli.errors import CnnError


def check_writable_dir(directory: Path, what: str = "output folder") -> None:
    """Fail early, before any work, when ``directory`` cannot take new files."""
    directory = Path(directory)
    probe = directory
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise CnnError(f"cannot write {what} '{directory}': '{probe}' is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise CnnError(f"cannot write {what} '{directory}': permission denied")
    try:  # the permission bits can say yes where nothing can be written (/proc, /sys, read-only mounts)
        fd, tmp = tempfile.mkstemp(prefix=".cnncli-probe.", dir=probe)
    except OSError as exc:
        raise CnnError(f"cannot write {what} '{directory}': {exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(tmp)


def check_not_an_input(target: Path | str, inputs, flag: str) -> None:
    """Refuse (BadArgument naming ``flag``) an output ``target`` that is one of the run's input
    files, however it is spelled or linked: writing it would replace the input. ``inputs``: what
    the run reads (paths; '-', bytes, arrays and models in memory are skipped)."""
    from cnncli.errors import BadArgument

    for source in inputs:
        source = getattr(source, "source", source)  # a model already loaded: the file it came from
        if isinstance(source, (str, os.PathLike)) and os.fspath(source) != "-":
            try:
                same = os.path.samefile(target, source)
            except (OSError, ValueError):  # either is not there (yet)
                same = False
            if same:
                raise BadArgument(flag, f"'{os.fspath(target)}' is '{os.fspath(source)}', an input of this run: "
                                        "writing it would replace it")


def can_write_folder(folder: Path | str) -> bool:
    """Whether ``folder`` is, or could be made, a folder this process can write in (nothing is
    created: a folder under a file, or under a read-only one, cannot)."""
    try:
        probe = Path(folder).resolve()
    except (OSError, RuntimeError):
        return False
    while not probe.exists():
        if probe.parent == probe:
            return False
        probe = probe.parent
    return probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)


_RUN_FOLDERS: list[str] = []


def run_folder(prefix: str) -> str:
    """A new temporary folder, removed when the process ends: at exit for the Python API, and by
    :func:`remove_run_folders`, which the CLI calls before its ``os._exit`` (which runs no atexit)."""
    folder = tempfile.mkdtemp(prefix=prefix)
    _RUN_FOLDERS.append(folder)
    atexit.register(shutil.rmtree, folder, True)
    return folder


def remove_run_folders() -> None:
    while _RUN_FOLDERS:
        shutil.rmtree(_RUN_FOLDERS.pop(), ignore_errors=True)


def ensure_dir(directory: Path | str) -> Path:
    """Create ``directory`` (and its parents) if needed; an OSError becomes a one-line CnnError."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CnnError(f"cannot create folder '{directory}': {exc.strerror or exc}") from None
    return directory


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(target: Path | str, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``target`` on success.

    On any exception (Ctrl-C and SIGTERM included: they are BaseExceptions) the temporary file is
    removed and ``target`` is left untouched.
    """
    target = Path(target)
    suffix = suffix if suffix is not None else target.suffix
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # the temporary name stays short: a target name near the 255-byte limit must still work
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name[:40]}.", suffix=f".tmp{suffix}", dir=target.parent)
    except OSError as exc:
        raise CnnError(f"cannot write '{target}': {exc.strerror or exc}") from None
    tmp_path = Path(tmp)
    try:  # from the moment the temporary file exists
        os.close(fd)
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        yield tmp_path
        os.replace(tmp_path, target)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        raise CnnError(f"cannot write '{target}': {exc.strerror or exc}") from None
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_atomic(target: Path | str, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)`` and move the result onto ``target`` atomically."""
    with atomic_path(target) as tmp:
        writer(tmp)
    return Path(target)


def write_bytes_atomic(target: Path | str, data: bytes) -> Path:
    return write_atomic(target, lambda p: p.write_bytes(data))
