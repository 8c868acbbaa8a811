"""`cnn stats` in a real pseudo-terminal of 40, 80 and 120 columns: the table fits, every MACs and
params value of the JSON output appears whole on one line, no cell is left empty."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from cnncli.render.text import human, width
from helpers import REPO, ZFNET_PAPER

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def pty_bytes(args: list[str], cols: int, rows: int = 50, timeout: float = 120,
              env_extra: dict | None = None) -> tuple[int, bytes]:
    """Run ``args`` with stdin, stdout and stderr on a pseudo-terminal ``cols`` wide (``env_extra``
    added to its environment); its exit status and every byte it wrote there. A child silent for
    ``timeout`` seconds is killed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    env["TERM"] = "xterm-256color"
    env.update(env_extra or {})
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, cwd=REPO, env=env, close_fds=True)
    os.close(slave)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            if not ready:
                break
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            chunks.append(chunk)
        code = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return code, b"".join(chunks)


def run_in_pty(args: list[str], cols: int, rows: int = 50, timeout: float = 120) -> tuple[int, str]:
    """``pty_bytes``' output without colour codes, with plain newlines."""
    code, data = pty_bytes(args, cols, rows, timeout)
    return code, ANSI.sub("", data.decode("utf-8", errors="replace").replace("\r\n", "\n"))


@pytest.fixture(scope="module")
def zf_json():
    proc = subprocess.run([sys.executable, "-m", "cnncli", "stats", str(ZFNET_PAPER), "--format", "json"],
                          cwd=REPO, capture_output=True, timeout=120)
    assert proc.returncode == 0
    return json.loads(proc.stdout)


@pytest.mark.parametrize("cols", [40, 80, 120])
def test_stats_in_a_terminal(cols, zf_json):
    code, text = run_in_pty([sys.executable, "-m", "cnncli", "stats", str(ZFNET_PAPER)], cols)
    assert code == 0, text
    lines = text.splitlines()
    assert all(width(line) <= cols for line in lines), max(lines, key=width)
    for layer in zf_json["layers"]:
        for key in ("macs", "params"):
            forms = {f"{layer[key]:,}", human(layer[key])}
            assert any(f in line for line in lines for f in forms), (cols, layer["name"], key, layer[key])
        assert any(layer["name"] in line for line in lines), layer["name"]
    boxed = [line for line in lines if line.startswith("│")]
    if boxed:  # a table: every row's cells are there, none squeezed to nothing
        assert len(boxed) == len(zf_json["layers"])
        for line in boxed:
            cells = [c.strip() for c in line.strip("│").split("│")]
            assert all(cells[j] for j in (1, 2, 3, 4, 5)), line  # name, op, output, MACs, params
    else:  # records: one per layer, no header without its value
        assert cols < 80
        firsts = [line for line in lines if re.match(r"(# \d+  )?name ", line)]
        assert len(firsts) == len(zf_json["layers"])
    assert f"{zf_json['totals']['macs']:,}" in text
    if cols == 80:
        assert len(lines) < 60  # 232 lines before, every column folded to a few characters


def test_stats_by_op_and_connectivity_in_a_terminal():
    for args in (["stats", str(ZFNET_PAPER), "--by", "op"], ["connectivity", str(ZFNET_PAPER)]):
        for cols in (40, 80):
            code, text = run_in_pty([sys.executable, "-m", "cnncli", *args], cols)
            assert code == 0, text
            assert all(width(line) <= cols for line in text.splitlines()), text
            assert "Conv" in text or "conv5" in text


@pytest.mark.parametrize("cols", [40, 80])
def test_filters_and_features_in_a_terminal(cols, tmp_path):
    mini = str(REPO / "sample_models" / "zfnet_mini.onnx")
    image = str(REPO / "sample_models" / "images" / "star.png")
    for args, rows in ((["filters", mini, "--layer", "1"], 48), (["features", mini, image, "--layer", "1"], 48)):
        code, text = run_in_pty([sys.executable, "-m", "cnncli", *args, "--out", str(tmp_path)], cols)
        assert code == 0, text
        lines = text.splitlines()
        # the montage's path whole on its own line under the table (the terminal wraps it, a copy gets it all)
        [montage] = [line for line in lines if line.startswith("montage: ")]
        assert Path(montage.removeprefix("montage: ")).is_file()
        assert all(width(line) <= cols for line in lines if line != montage), text
        boxed = [line for line in lines if line.startswith("│")]
        records = [line for line in lines if re.match(r"(filter|channel) \d+", line)]
        assert len(boxed) == rows or len(records) == rows, text
        for line in boxed:
            assert all(c.strip() for c in line.strip("│").split("│")[:2]), line  # channel and its first number
