"""`cnn` in odd process environments, on real processes (issue 15): SIGTERM and SIGHUP, closed or
full standard streams, an unwritable HOME (matplotlib), endless model bytes on stdin, FIFOs and
devices among the images, onnxruntime's messages without C++ source locations, and which frame
of an animated image is used."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper
from PIL import Image

from helpers import REPO, init, make_model, out, save, vi
from test_hardening_inputs import _interrupt_when_files_appear

CNN = [sys.executable, "-m", "cnncli"]
MINI = REPO / "sample_models" / "zfnet_mini.onnx"
IMAGES = REPO / "sample_models" / "images"
STAR = IMAGES / "star.png"
# a C++ source location as onnxruntime writes it: "matmul_helper.h:59", "/onnxruntime_src/…/model.cc:256"
SOURCE_LOCATION = re.compile(r"[\w/.-]+\.(?:h|hpp|cc|cpp|cu):\d+")


def _env(**extra) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}, **extra}


def _shell(cmd: str, timeout: int = 120, **env) -> subprocess.CompletedProcess:
    """``cmd`` in bash, ``$CNN`` standing for the `cnn` command line."""
    return subprocess.run(["bash", "-c", cmd], capture_output=True, timeout=timeout, cwd=REPO,
                          env=_env(CNN=" ".join(CNN), **env))


def _one_line(stderr: bytes, start: str = "Error: ") -> str:
    lines = [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    assert len(lines) == 1, stderr.decode(errors="replace")
    assert lines[0].startswith(start) and "Traceback" not in lines[0]
    return lines[0]


def _mystery(path: Path) -> Path:
    """A model `cnn stats` costs with a warning (an op it has no rule for)."""
    node = helper.make_node("Mystery", ["x"], ["y"], name="mystery", domain="custom")
    return save(make_model([node], [vi("x", [1, 3, 8, 8])], [out()], extra_opsets=[("custom", 1)]), path)


# ----------------------------------------------------------------------------- signals


@pytest.mark.parametrize("signum, code, line, command", [
    (signal.SIGTERM, 143, "Terminated.", "project"),
    (signal.SIGTERM, 143, "Terminated.", "top"),
    (signal.SIGHUP, 129, "Hangup.", "project"),
])
def test_sigterm_and_sighup_end_like_ctrl_c(tmp_path, signum, code, line, command):
    """`kill`, systemd and CI send SIGTERM: exit 128 + the signal, one line, no temporary file left
    in --out or beside --export-reverse, the files finished before it whole."""
    out_dir = tmp_path / "out"
    if command == "top":
        args = ["top", str(MINI), str(IMAGES), "--layer", "2", "--channels", "all", "-k", "4"]
    else:
        args = ["project", str(MINI), str(STAR), "--layer", "2", "--channel", "all", "--batch-size", "1",
                "--export-reverse", str(tmp_path / "reverse.onnx")]
    done = _interrupt_when_files_appear([*CNN, *args, "--out", str(out_dir)], out_dir, signum)
    assert done.returncode == code, done.stderr
    assert done.stderr == f"{line}\n"
    assert done.stdout == ""
    left = list(out_dir.iterdir())
    assert left and all(not f.name.startswith(".") for f in left), left
    assert [f.name for f in tmp_path.iterdir() if f.name.startswith(".")] == []
    for f in left:
        with Image.open(f) as im:
            im.load()


def _interrupt_when(cmd: list[str], ready, signum: int, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run ``cmd``, send ``signum`` once ``ready()`` holds (the run is under way)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(**env))
    while proc.poll() is None and not ready():
        time.sleep(0.002)
    assert proc.poll() is None, f"finished before the signal: {proc.stderr.read()}"
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def _ours(folder: Path) -> list[Path]:
    """What the run left in ``folder`` (onnxruntime's own session-id file .ses aside)."""
    return [f for f in folder.rglob("*") if f.name != ".ses"]


@pytest.mark.parametrize("command", ["dream", "report", "profile"])
@pytest.mark.parametrize("signum, code, line", [(signal.SIGTERM, 143, "Terminated."), (signal.SIGINT, 130, "Interrupted.")])
def test_new_commands_end_on_a_signal_with_one_line_and_no_temporary_file(tmp_path, command, signum, code, line):
    """`cnn dream` and `cnn report` stopped once their first files are written, `cnn profile` once
    its profiling run has begun: 128 + the signal, the one line, nothing on stdout, no temporary
    file in --out or in TMPDIR, and what is in --out whole."""
    out_dir, tmp = tmp_path / "out", tmp_path / "tmp"
    tmp.mkdir()
    args = {"dream": ["dream", MINI, "--layer", 2, "--channel", "all", "--batch-size", 1, "--steps", 20, "--out", out_dir],
            "report": ["report", MINI, IMAGES, "--out", out_dir],
            "profile": ["profile", MINI, "--runs", 10**5, "--plot", out_dir / "plot.png"]}[command]
    if command == "profile":
        def ready():  # its trace folder is there
            return any(f.name.startswith("cnncli-profile") for f in tmp.iterdir())
    else:
        def ready():
            return out_dir.exists() and any(f.is_file() and not f.name.startswith(".") for f in out_dir.rglob("*"))
    done = _interrupt_when([*CNN, *map(str, args)], ready, signum, {"TMPDIR": str(tmp)})
    assert (done.returncode, done.stdout) == (code, ""), done.stderr
    assert done.stderr.splitlines()[-1:] == [line] and "Error" not in done.stderr, done.stderr
    assert _ours(tmp) == []
    left = [f for f in _ours(out_dir) if f.is_file()] if out_dir.exists() else []
    assert all(not f.name.startswith(".") for f in left), left
    assert command != "profile" or left == []
    for f in left:
        if f.suffix == ".png":
            with Image.open(f) as im:
                im.load()
        elif f.suffix == ".json":
            json.loads(f.read_text())


def test_a_signal_while_onnxruntime_initialises_is_an_interrupt_not_an_import_error(monkeypatch):
    """A signal during `import onnxruntime` (its C extension's init) comes back as an ImportError
    caused by it: Ctrl-C then said 'Interrupted.' no more, but printed a traceback and exited 1."""
    from click.testing import CliRunner

    import cnncli.runtime.sessions
    from cnncli.cli import cli
    from cnncli.render.process import Terminated

    for signalled in (KeyboardInterrupt(), Terminated(signal.SIGTERM)):
        def import_failed(signalled=signalled):
            raise ImportError("initialization failed") from signalled

        monkeypatch.setattr(cnncli.runtime.sessions, "available_providers", import_failed)
        if isinstance(signalled, KeyboardInterrupt):
            r = CliRunner().invoke(cli, ["profile", str(MINI), "--runs", "1"])
            assert (r.exit_code, r.stderr) == (130, "Interrupted.\n"), (r.stderr, r.exception)
        else:  # main() ends the run on Terminated, as for any other place the signal comes
            with pytest.raises(Terminated):
                CliRunner().invoke(cli, ["profile", str(MINI), "--runs", "1"])
    monkeypatch.setattr(cnncli.runtime.sessions, "available_providers", lambda: (_ for _ in ()).throw(ImportError("no")))
    assert isinstance(CliRunner().invoke(cli, ["profile", str(MINI), "--runs", "1"]).exception, ImportError)


# ----------------------------------------------------------------------------- standard streams


def test_closed_stderr_never_puts_the_error_on_stdout(tmp_path):
    done = _shell("$CNN stats no-such-model.onnx 2>&-")
    assert done.returncode == 1
    assert done.stdout == b""
    done = _shell(f"$CNN stats '{_mystery(tmp_path / 'm.onnx')}' --format json 2>&-")  # a warning, lost
    assert done.returncode == 0
    assert json.loads(done.stdout)["totals"]["incomplete"] is True


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_full_stderr_loses_messages_not_data(tmp_path, fmt):
    """`2>/dev/full`: the warning is lost, stdout's data is whole and the exit code 0; an error
    still exits 1 with nothing on stdout."""
    model = _mystery(tmp_path / "m.onnx")
    done = _shell(f"$CNN stats '{model}' --format {fmt} 2>/dev/full")
    assert done.returncode == 0
    reference = _shell(f"$CNN stats '{model}' --format {fmt} 2>/dev/null")
    assert done.stdout == reference.stdout and done.stdout.strip()
    done = _shell("$CNN stats no-such-model.onnx 2>/dev/full")
    assert (done.returncode, done.stdout) == (1, b"")


@pytest.mark.parametrize("command", ["stats -", f"top '{MINI}' - --layer 1 --out {{out}}"])
def test_closed_stdin_is_a_one_line_error(tmp_path, command):
    done = _shell(f"$CNN {command.format(out=tmp_path / 'o')} <&-")
    assert done.returncode == 1
    assert "standard input" in _one_line(done.stderr)


# ----------------------------------------------------------------------------- matplotlib's folders


@pytest.mark.parametrize("home_env, command", [
    ("home", "stats '{model}' --plot '{tmp}/costs.png' --format json"),
    ("mplconfigdir", "stats '{model}' --plot '{tmp}/costs.png' --format json"),
    ("home", "features '{model}' '{image}' --layer 1 --out '{tmp}/o' --format json"),
])
def test_unwritable_home_prints_nothing_and_leaves_no_folder(tmp_path, home_env, command):
    """A HOME (or MPLCONFIGDIR) that cannot be written: no matplotlib lines, no onnxruntime
    telemetry line on stderr, and no /tmp/matplotlib-* (or any other) folder left in TMPDIR."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {"TMPDIR": str(tmp), "HOME": str(blocker / "home"), "XDG_CONFIG_HOME": "", "XDG_CACHE_HOME": ""}
    if home_env == "mplconfigdir":
        env["MPLCONFIGDIR"] = str(blocker / "mpl")
    done = _shell("$CNN " + command.format(model=MINI, image=STAR, tmp=tmp_path), **env)
    assert done.returncode == 0, done.stderr
    assert done.stderr == b""
    assert json.loads(done.stdout)
    # onnxruntime's telemetry keeps one file, .ses, in TMPDIR whatever HOME is: only folders count
    assert [f for f in tmp.iterdir() if f.is_dir()] == []


# ----------------------------------------------------------------------------- endless model bytes


class _Endless(io.RawIOBase):
    """A stream that starts like an ONNX model (ir_version, then a graph field announcing 4 GiB)
    and never ends; it fails the test once ``limit`` bytes were read."""

    def __init__(self, limit: int):
        self.head, self.given, self.limit = b"\x08\x08\x3a\xff\xff\xff\xff\x0f", 0, limit

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        assert self.given < self.limit, "read past the cap"
        n = len(b)
        chunk = (self.head[self.given:] + bytes(n))[:n] if self.given < len(self.head) else bytes(n)
        b[:n] = chunk
        self.given += n
        return n


def test_endless_stdin_stops_at_the_cap(monkeypatch):
    from cnncli.errors import CnnError
    from cnncli.frontend import load

    monkeypatch.setattr(load, "MAX_MODEL_BYTES", 1 << 20, raising=False)
    stream = _Endless(limit=64 << 20)
    with pytest.raises(CnnError, match="larger than"):
        load.read_source_bytes("-", io.BufferedReader(stream))
    assert stream.given <= (1 << 20) + (8 << 20)


def test_large_model_file_is_refused_before_reading(tmp_path, monkeypatch):
    from cnncli.errors import CnnError
    from cnncli.frontend import load

    path = tmp_path / "big.onnx"
    path.write_bytes(MINI.read_bytes())
    monkeypatch.setattr(load, "MAX_MODEL_BYTES", path.stat().st_size - 1, raising=False)
    with pytest.raises(CnnError, match="larger than"):
        load.read_source_bytes(str(path))
    monkeypatch.setattr(load, "MAX_MODEL_BYTES", path.stat().st_size)
    assert load.read_source_bytes(str(path)) == MINI.read_bytes()


# ----------------------------------------------------------------------------- FIFOs and devices


@pytest.fixture
def fifo_images(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    os.mkfifo(folder / "pipe.png")  # opening it would wait for a writer forever
    (folder / "star.png").write_bytes(STAR.read_bytes())
    return folder


@pytest.mark.parametrize("how", ["list", "folder", "stdin", "glob"])
def test_fifo_and_devices_among_images_are_skipped(tmp_path, fifo_images, how):
    names = [str(fifo_images / "pipe.png"), "/dev/zero", str(fifo_images / "star.png")]
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(names) + "\n")
    images = {"list": str(listing), "folder": str(fifo_images), "stdin": "-", "glob": str(fifo_images / "*.png")}[how]
    cmd = [*CNN, "top", str(MINI), images, "--layer", "1", "--channels", "2", "-k", "1", "--out",
           str(tmp_path / "o"), "--format", "json"]
    done = subprocess.run(cmd, input=listing.read_bytes() if how == "stdin" else b"", capture_output=True,
                          timeout=60, cwd=REPO, env=_env())
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["scanned"] == 1
    warning = _one_line(done.stderr, "Warning: ")
    assert "pipe.png" in warning and ("/dev/zero" in warning or how in ("folder", "glob"))


@pytest.mark.parametrize("name", ["pipe.png", "pipe.npy"])
def test_fifo_as_the_input_is_a_one_line_error(tmp_path, name):
    os.mkfifo(tmp_path / name)
    done = subprocess.run([*CNN, "project", str(MINI), str(tmp_path / name), "--layer", "1", "--out", str(tmp_path / "o")],
                          capture_output=True, timeout=60, cwd=REPO, env=_env())
    assert done.returncode == 1
    assert "not a regular file" in _one_line(done.stderr)


def test_read_image_refuses_devices():
    from cnncli.imaging.preprocess import ImageReadError, read_image

    with pytest.raises(ImageReadError, match="not a regular file"):
        read_image("/dev/zero", 3, (8, 8))


# ----------------------------------------------------------------------------- onnxruntime's messages


ORT_TEXTS = [
    ("[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running MatMul node. Name:'mm' "
     "Status Message: matmul_helper.h:59 Compute MatMul dimension mismatch",
     "Non-zero status code returned while running MatMul node. Name:'mm' Status Message: MatMul dimension mismatch"),
    ("[ONNXRuntimeError] : 1 : FAIL : tensorprotoutils.cc:1730 ValidateEmbeddedTensorProtoDataSizeAndShape "
     "Initializer 'W': raw_data size (428 bytes) does not match expected size (432 bytes)",
     "Initializer 'W': raw_data size (428 bytes) does not match expected size (432 bytes)"),
    ("[ONNXRuntimeError] : 1 : FAIL : /onnxruntime_src/onnxruntime/core/graph/model_load_utils.h:46 void "
     "onnxruntime::model_load_utils::ValidateOpsetForDomain(const std::unordered_map<std::__cxx11::basic_string<char>, "
     "int>&, const onnxruntime::logging::Logger&, bool, const std::string&, int) ONNX Runtime only *guarantees* support",
     "ONNX Runtime only *guarantees* support"),
    ("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Status Message: /onnxruntime_src/onnxruntime/core/providers/cpu/"
     "tensor/reshape_helper.h:47 onnxruntime::ReshapeHelper::ReshapeHelper(const onnxruntime::TensorShape&, "
     "onnxruntime::TensorShapeVector&, bool) size != 0 was false. Input shape:{1,3,8,8}",
     "Status Message: size != 0 was false. Input shape:{1,3,8,8}"),
]


def test_ort_message_drops_source_locations():
    from cnncli.runtime.sessions import ort_message

    assert [ort_message(RuntimeError(text)) for text, _ in ORT_TEXTS] == [clean for _, clean in ORT_TEXTS]


def _run_failure(path: Path) -> Path:
    """Loads in onnxruntime, fails when run: MatMul over a width that is only known at run time."""
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"), helper.make_node("Conv", ["h", "K"], ["y"], name="conv")]
    return save(make_model(nodes, [vi("x", [1, 3, "h", "w"])], [out()], [init("W", [5, 5]), init("K", [4, 3, 3, 3])]), path)


def test_session_errors_have_no_source_location(tmp_path):
    """The one session layer every command runs through (project's forward and reverse runs,
    top's scan, features, filters' constant subgraphs, the reverse builder's values, Ray's actors):
    a model onnxruntime refuses at load, and one that fails when run."""
    from cnncli.errors import CnnError
    from cnncli.runtime.sessions import make_session

    weight = init("W", [4, 3, 3, 3])
    weight.raw_data = weight.raw_data[:-4]  # 4 bytes short: onnxruntime's check names its .cc file
    refused = make_model([helper.make_node("Conv", ["x", "W"], ["y"])], [vi("x", [1, 3, 8, 8])], [out()], [weight])
    with pytest.raises(CnnError) as load_error:
        make_session(refused.SerializeToString(), "cpu")
    session = make_session(_run_failure(tmp_path / "m.onnx").read_bytes(), "cpu")
    with pytest.raises(CnnError) as run_error:
        session.run(None, {"x": np.zeros((1, 3, 8, 8), np.float32)})
    for error in (load_error, run_error):
        assert "onnxruntime" in str(error.value) and not SOURCE_LOCATION.search(str(error.value)), error.value


def test_onnxruntime_run_error_on_the_command_line_has_no_source_location(tmp_path):
    path = _run_failure(tmp_path / "m.onnx")
    args = ["features", str(path), str(STAR), "--layer", "1", "--size", "8x8", "--out", str(tmp_path / "o")]
    done = subprocess.run([*CNN, *args], capture_output=True, timeout=120, cwd=REPO, env=_env())
    assert done.returncode == 1
    line = _one_line(done.stderr)
    assert "onnxruntime" in line and "MatMul dimension mismatch" in line
    assert not SOURCE_LOCATION.search(line), line


# ----------------------------------------------------------------------------- animated images


def _frames() -> list[Image.Image]:
    return [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]


@pytest.mark.parametrize("suffix, options", [
    (".gif", {}), (".png", {}), (".webp", {"lossless": True}), (".tiff", {}),
])
def test_animated_and_multipage_images_give_their_first_frame(tmp_path, suffix, options):
    from cnncli.imaging.preprocess import read_image

    first, *rest = _frames()
    path = tmp_path / f"anim{suffix}"
    first.save(path, save_all=True, append_images=rest, duration=100, loop=0, **options)
    with Image.open(path) as im:
        assert getattr(im, "n_frames", 1) == 3
        im.seek(2)
    pixels = read_image(path, 3, (8, 8))
    assert np.all(np.abs(pixels.astype(int) - [255, 0, 0]) <= 2), pixels[0, 0]
