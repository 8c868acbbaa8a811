"""`cnn top --engine ray` in hostile conditions (issue 15): a worker killed mid-scan, a list of
file:// URIs with odd names, FIFOs among the images, SIGTERM mid-scan, a HOME Ray cannot write.

The model and the image helpers are test_top_ray's. One local Ray runtime (2 CPUs) is shared by
the in-process tests; the SIGTERM and HOME checks need a `cnn` process of their own, which starts
its embedded runtime (two more starts). Without Ray installed the module is skipped.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cnncli.cli import cli
from test_top_ray import assert_same_entries, entries, tiny_model

pytest.importorskip("ray")

CNN = [sys.executable, "-m", "cnncli"]
N_MANY = 2000  # at one image per forward run, a scan of several seconds: time to act on it
ODD_NAMES = ["a b.png", "100%.png", "#hash.png", "q?mark.png", "ü é.png", "semi;colon.png", "plus+sign.png"]
# generous bounds for a run on a loaded 2-core machine; a run that goes past one is a hang
RUN_LIMIT = 300
FIFO_LIMIT = 180
RAY_SAYS = re.compile(r"\bray\b|raylet|auth|token|traceback", re.IGNORECASE)


# ----------------------------------------------------------------------------- fixtures


def _noise(path: Path, seed: int, size: tuple[int, int] = (32, 32)) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("ray_hostile")
    model = tiny_model(base / "tiny.onnx")
    many = base / "many"
    many.mkdir()
    for i in range(N_MANY):
        _noise(many / f"i{i:05d}.png", i)
    odd = base / "odd"
    odd.mkdir()
    for i, name in enumerate(ODD_NAMES):
        _noise(odd / name, 10_000 + i, (24 + i, 40 - i))
    return base, model


@pytest.fixture(scope="module")
def ray_runtime():
    import logging

    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield ray
    ray.shutdown()


def _top(model: Path, images, out: Path, *extra: str, stdin: str | None = None):
    return CliRunner().invoke(cli, ["top", str(model), str(images), "--layer", "2", "--channels", "all", "-k", "3",
                                    "--format", "json", "--out", str(out), *extra], input=stdin)


# ----------------------------------------------------------------------------- processes


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d.name))
    return kids


def descendants(pid: int) -> list[int]:
    kids, found, todo = _children(), [], [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """Running (a zombie no parent has reaped yet is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def working_actor(root: int) -> int | None:
    """A model actor of a scan under ``root`` while it works on a block (Ray titles the process
    with the method it runs)."""
    for pid in descendants(root):
        line = cmdline(pid)
        if "BlockTopK" in line and line.split()[0].endswith(".submit"):
            return pid
    return None


# ----------------------------------------------------------------------------- a worker dies


@pytest.mark.parametrize("verbose", [False, True])
def test_a_killed_worker_leaves_stdout_to_the_data(setup, ray_runtime, tmp_path, verbose):
    """An actor killed while it works on a block is restarted and its block run again (README:
    Failures); Ray's `(raylet) …` lines about it never reach stdout, which stays one JSON
    document: off without --verbose, on stderr with it."""
    base, model = setup
    done, killed = threading.Event(), []

    def killer():
        while not done.is_set() and not killed:
            pid = working_actor(os.getpid())
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        r = _top(model, base / "many", tmp_path / "out", "--engine", "ray", "--workers", "1", "--batch-size", "1",
                 *(["--verbose"] if verbose else []))
    finally:
        done.set()
        thread.join()
    assert killed, "no model actor was seen at work"
    assert r.exit_code == 0, (r.stderr, r.exception)
    doc = json.loads(r.stdout)
    assert doc["scanned"] == N_MANY and doc["skipped"] == 0
    assert "(raylet)" not in r.stdout
    if not verbose:
        assert "(raylet)" not in r.stderr and r.stderr.strip() == "", r.stderr


def test_ray_lines_go_to_stderr_with_verbose(ray_runtime, capfd):
    """The functions Ray's driver prints the cluster's lines with (its error listener and log
    forwarding; Ray Client's log stream): inside a run, a line bound for stdout goes to stderr
    with --verbose and nowhere without."""
    import ray._private.worker as worker
    from ray.util.client.logsclient import LogstreamClient

    from cnncli.scale.ray_top import RayRuntime

    for verbose in (False, True):
        with RayRuntime(None, verbose):
            worker.print_to_stdstream({"lines": [f"A worker died. verbose={verbose}"], "pid": "raylet",
                                       "is_err": False}, False)
            LogstreamClient.stdstream(None, -1, f"a client's worker printed. verbose={verbose}\n")
    got = capfd.readouterr()
    assert "verbose" not in got.out
    assert "died. verbose=True" in got.err and "printed. verbose=True" in got.err
    assert "verbose=False" not in got.err


# ----------------------------------------------------------------------------- file:// URIs


def test_file_uris_give_the_local_engines_entries(setup, ray_runtime, tmp_path):
    """A list of file:// URIs (percent-encoded: spaces, %, #, ?, non-ASCII; and the
    file://localhost/ spelling) scans and projects as the local engine does on the same files."""
    base, model = setup
    odd = sorted((base / "odd").iterdir())
    uris = [p.as_uri() for p in odd]
    uris[0] = uris[0].replace("file:///", "file://localhost/", 1)
    listing = tmp_path / "uris.txt"
    listing.write_text("\n".join(uris) + "\n", encoding="utf-8")
    paths = tmp_path / "paths.txt"
    paths.write_text("\n".join(str(p) for p in odd) + "\n", encoding="utf-8")

    local = _top(model, paths, tmp_path / "out_local")
    assert local.exit_code == 0, (local.stderr, local.exception)
    r = _top(model, listing, tmp_path / "out_ray", "--engine", "ray", "--workers", "1")
    assert r.exit_code == 0, (r.stderr, r.exception)
    assert r.stderr.strip() == ""
    doc, want = json.loads(r.stdout), json.loads(local.stdout)
    assert doc["scanned"] == len(odd) and doc["skipped"] == 0
    by_uri = dict(zip(uris, (str(p) for p in odd)))
    got = {c: [dict(e, image=by_uri[e["image"]]) for e in es] for c, es in entries(doc).items()}
    assert_same_entries(got, entries(want))
    assert len(list((tmp_path / "out_ray").glob("*.png"))) == len(list((tmp_path / "out_local").glob("*.png")))


# ----------------------------------------------------------------------------- FIFOs


def test_fifos_in_a_list_are_skipped_not_waited_for(setup, ray_runtime, tmp_path):
    """A list naming a FIFO (as a path and as a file:// URI) scans the real images and reports
    the FIFOs unreadable; nothing opens them waiting for a writer. Should the scan wait (the bug),
    the test writes to the FIFOs after FIFO_LIMIT seconds, so that it ends, and fails."""
    base, model = setup
    fifos = [tmp_path / "pipe.png", tmp_path / "pipe two.png"]
    for f in fifos:
        os.mkfifo(f)
    real = sorted((base / "many").glob("i0000*.png"))
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join([str(real[0]), str(fifos[0]), fifos[1].as_uri(), *map(str, real[1:])]) + "\n")
    finished, hung = threading.Event(), []

    def watchdog():
        if finished.wait(FIFO_LIMIT):
            return
        hung.append(True)
        while not finished.is_set():  # a writer that closes at once: the waiting reader sees EOF
            for f in fifos:
                try:
                    os.close(os.open(f, os.O_WRONLY | os.O_NONBLOCK))
                except OSError:
                    pass
            time.sleep(0.2)

    thread = threading.Thread(target=watchdog, daemon=True)
    thread.start()
    try:
        r = _top(model, listing, tmp_path / "out", "--engine", "ray", "--workers", "1")
    finally:
        finished.set()
        thread.join()
    assert not hung, "the scan waited on a FIFO"
    assert r.exit_code == 0, (r.stderr, r.exception)
    doc = json.loads(r.stdout)
    assert doc["scanned"] == len(real) and doc["skipped"] == 2
    assert "skipped 2 unreadable" in r.stderr and "pipe.png" in r.stderr


# ----------------------------------------------------------------------------- SIGTERM


def test_sigterm_mid_scan_ends_with_one_line_and_no_ray_process_left(setup, tmp_path):
    """SIGTERM while the actors work: exit 143 and `Terminated.` alone on stderr (no native stack
    from Ray's signal handler, no traceback), nothing on stdout, no file in --out, and every
    process of the embedded runtime (GCS, raylet, workers) gone."""
    base, model = setup
    out = tmp_path / "out"
    proc = subprocess.Popen([*CNN, "top", str(model), str(base / "many"), "--layer", "2", "-k", "3", "--format",
                             "json", "--out", str(out), "--engine", "ray", "--workers", "1", "--batch-size", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + RUN_LIMIT
        while proc.poll() is None and time.monotonic() < deadline and working_actor(proc.pid) is None:
            time.sleep(0.05)
        assert proc.poll() is None, f"finished before the signal: {proc.stderr.read()}"
        runtime = descendants(proc.pid)
        assert any("gcs_server" in cmdline(p) for p in runtime) and any("raylet" in cmdline(p) for p in runtime)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=RUN_LIMIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, stderr
    assert stderr == "Terminated.\n"
    assert stdout == ""
    assert not out.exists() or list(out.iterdir()) == []
    assert [p for p in tmp_path.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"] == []
    deadline = time.monotonic() + 60  # fate-shared processes go when the kernel notices the parent left
    while time.monotonic() < deadline and any(alive(p) for p in runtime):
        time.sleep(0.2)
    assert [cmdline(p)[:80] for p in runtime if alive(p)] == []


# ----------------------------------------------------------------------------- HOME


def test_home_ray_cannot_write_still_runs(setup, tmp_path):
    """Ray writes its token to ~/.ray/auth_token for an embedded runtime: a HOME that cannot hold
    it (a path under a file) still gives a whole run, Ray quiet at start-up and shutdown."""
    base, model = setup
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["HOME"] = str(blocker / "home")
    images = sorted((base / "many").glob("i000[0-3]*.png"))
    done = subprocess.run([*CNN, "top", str(model), "-", "--layer", "2", "-k", "3", "--format", "json", "--out",
                           str(tmp_path / "out"), "--engine", "ray", "--workers", "1"],
                          input="\n".join(map(str, images)) + "\n", capture_output=True, text=True, env=env,
                          timeout=RUN_LIMIT)
    assert done.returncode == 0, done.stderr
    assert not RAY_SAYS.search(done.stderr), done.stderr
    assert json.loads(done.stdout)["scanned"] == len(images)
