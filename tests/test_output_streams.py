"""What `cnn` does with the stream it writes to, tested on real processes: a reader that leaves
early (`| head -1`), a full disk (/dev/full), a closed stdout, and stdout encodings that are not
UTF-8."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from helpers import LIGHT_DIR, REPO

DENSENET = LIGHT_DIR / "light_densenet121.onnx"  # hundreds of rows: more than a pipe buffer holds
MINI = REPO / "sample_models" / "zfnet_mini.onnx"
CNN = [sys.executable, "-m", "cnncli"]


def env(**extra) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "PYTHONIOENCODING", "LC_ALL", "PYTHONUTF8")}
    return {**e, **extra}


def one_error_line(stderr: bytes) -> str:
    lines = [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    assert len(lines) == 1, stderr.decode(errors="replace")
    assert lines[0].startswith("Error: ") and "Traceback" not in lines[0]
    return lines[0]


@pytest.mark.parametrize("fmt", ["table", "json", "jsonl", "csv", "markdown"])
def test_head_closing_the_pipe_is_a_normal_end(fmt):
    """`cnn stats … | head -1` under pipefail: exit 0 and nothing on stderr, in every format."""
    cmd = f"{' '.join(CNN)} stats '{DENSENET}' --format {fmt} | head -1"
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], cwd=REPO, capture_output=True, env=env(), timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stderr == b""
    assert proc.stdout.strip()


@pytest.mark.parametrize("args", [["profile", "--runs", "1", "--warmup", "0", "--format", "csv"],
                                  ["diff", "--input-shape", "data_0=1x3x96x96", "--format", "jsonl"]])
def test_head_closing_the_pipe_is_a_normal_end_for_profile_and_diff(args):
    """The new commands with hundreds of rows under `| head -1` (pipefail): exit 0, stderr quiet."""
    cmd = f"{' '.join(CNN)} {args[0]} '{DENSENET}' --quiet {' '.join(args[1:])} | head -1"
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], cwd=REPO, capture_output=True, env=env(), timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"Error" not in proc.stderr and b"Traceback" not in proc.stderr, proc.stderr.decode()
    assert proc.stdout.count(b"\n") == 1 and proc.stdout.strip()


@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
def test_full_disk_is_a_one_line_error(fmt):
    with open("/dev/full", "w") as full:
        proc = subprocess.run([*CNN, "stats", str(DENSENET), "--format", fmt], cwd=REPO, stdout=full,
                              stderr=subprocess.PIPE, env=env(), timeout=120)
    assert proc.returncode == 1
    assert "No space left on device" in one_error_line(proc.stderr)


def test_full_disk_for_a_small_output_is_a_one_line_error():
    """Small enough to sit in the buffer until the final flush."""
    with open("/dev/full", "w") as full:
        proc = subprocess.run([*CNN, "connectivity", "--input", "8x8", "--units", "10", "--kernel", "3x3", "--format", "json"],
                              cwd=REPO, stdout=full, stderr=subprocess.PIPE, env=env(), timeout=120)
    assert proc.returncode == 1
    one_error_line(proc.stderr)


@pytest.mark.parametrize("fmt", ["table", "csv"])
def test_closed_stdout_is_a_one_line_error(fmt):
    cmd = f"{' '.join(CNN)} stats '{REPO / 'sample_models' / 'zfnet_paper.onnx'}' --format {fmt} >&-"
    proc = subprocess.run(["bash", "-c", cmd], cwd=REPO, capture_output=True, env=env(), timeout=120)
    assert proc.returncode == 1
    assert "standard output" in one_error_line(proc.stderr)


@pytest.mark.parametrize("encoding_env", [{"PYTHONIOENCODING": "ascii"}, {"LC_ALL": "C", "PYTHONUTF8": "0"}])
@pytest.mark.parametrize("fmt", ["table", "csv", "markdown"])
def test_ascii_stdout_gets_ascii(tmp_path, encoding_env, fmt):
    """filters' title has '·'; the model file's name is not ASCII."""
    model = tmp_path / "modèle_×.onnx"
    model.write_bytes(MINI.read_bytes())
    proc = subprocess.run([*CNN, "filters", str(model), "--layer", "1", "--out", str(tmp_path / "o"), "--format", fmt],
                          cwd=REPO, capture_output=True, env=env(**encoding_env), timeout=120)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert b"Traceback" not in proc.stderr
    assert proc.stdout.isascii()
    text = proc.stdout.decode("ascii")
    assert "layer 1 kernels" in text or fmt == "csv"
    assert "0.0" in text or "0.1" in text  # the norms are there


def test_ascii_stdout_stats_table_keeps_numbers(tmp_path):
    proc = subprocess.run([*CNN, "stats", str(REPO / "sample_models" / "zfnet_paper.onnx")], cwd=REPO,
                          capture_output=True, env=env(PYTHONIOENCODING="ascii"), timeout=120)
    assert proc.returncode == 0 and proc.stdout.isascii()
    text = proc.stdout.decode()
    assert "| 1 | conv1 " in text and "170,755,200" in text and "1,168,032,896" in text
