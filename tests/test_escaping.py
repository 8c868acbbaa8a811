"""Names from a model, paths and arguments reach no terminal raw (issue 15): every text goes through
the one escaping function (``cnncli.escaping.visible``) on every stream: the `Error: …` line (click's
own usage errors included), `Warning:` lines, tables and Markdown wherever they go, CSV on a
terminal; JSON is ASCII anywhere, and JSON and CSV keep the exact text in a pipe. Figure titles
are escaped the same way (a newline in a model path or a tensor name used to crash them)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import sys

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import helper

from cnncli.cli import cli
from cnncli.render.text import visible  # (re-exported: cnncli.escaping.visible)
from helpers import REPO, init, make_model, out, vi
from test_terminal_pty import pty_bytes

# one of each: OSC 52 (clipboard write) ended by BEL, CSI clear screen, a DCS ended by ST, an 8-bit
# CSI, backspace, carriage return, newline, a line separator, and bidi controls
HOSTILE = "\x1b]52;c;SGk=\x07\x1b[2J\x1bP1$qm\x1b\\\x9b31m\x08\r\n\u2028\u202e\u2066\u200f"
BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
# what must never reach a stream raw (a newline ends a line of output; nothing else may)
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029" + BIDI + "]")
STAR = REPO / "sample_models" / "images" / "star.png"


def assert_clean(*texts: str) -> None:
    for text in texts:
        found = RAW.search(text)
        assert found is None, f"raw {found.group()!r} in {text!r}"


def run(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def error_line(result, code: int) -> str:
    """The one `Error: …` line of a failed run, checked clean of raw characters."""
    assert result.exit_code == code, (result.exit_code, result.stderr, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.stdout == ""
    assert_clean(result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def hostile_model(tag: str = "") -> onnx.ModelProto:
    """A 3-channel Conv (node and output named with HOSTILE) and a Relu, with hostile metadata."""
    conv = helper.make_node("Conv", ["x", "W"], ["t" + HOSTILE], name="conv" + HOSTILE, pads=[1, 1, 1, 1])
    relu = helper.make_node("Relu", ["t" + HOSTILE], ["y" + tag], name="relu" + HOSTILE)
    w = init("W", [4, 3, 3, 3], value=np.random.default_rng(0).standard_normal(108))
    m = make_model([conv, relu], [vi("x", [1, 3, 16, 16])], [out("y" + tag)], [w])
    m.metadata_props.add(key="note" + HOSTILE, value="v" + HOSTILE)
    return m


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("esc")
    plain = d / "plain.onnx"
    onnx.save(hostile_model(), plain)
    named = d / f"m{HOSTILE}.onnx"  # a path holding every hostile character a file name can
    shutil.copy(plain, named)
    undefined = make_model([helper.make_node("Relu", ["u" + HOSTILE], ["y"], name="r")], [vi("x", [1, 3, 16, 16])], [out()])
    onnx.save(undefined, d / "damaged.onnx")
    bad_preset = hostile_model()
    bad_preset.metadata_props.add(key="cnncli.preprocess", value="p" + HOSTILE)
    onnx.save(bad_preset, d / "preset.onnx")
    images = d / "imgs"
    images.mkdir()
    shutil.copy(STAR, images / f"star{HOSTILE}.png")
    (images / f"junk{HOSTILE}.png").write_bytes(b"not an image")
    np.save(d / "x.npy", np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32))
    blocker = d / f"file{HOSTILE}"
    blocker.write_text("a file, not a folder")
    return {"dir": d, "plain": plain, "named": named, "damaged": d / "damaged.onnx", "preset": d / "preset.onnx",
            "images": images, "npy": d / "x.npy", "blocker": blocker}


# ----------------------------------------------------------------------------- the function


def test_visible_escapes_controls_and_bidi_controls():
    for ch in [*map(chr, range(0x20)), *map(chr, range(0x7f, 0xa0)), "\u2028", "\u2029", *BIDI, "\udcff"]:
        shown = visible(f"a{ch}b")
        assert shown.startswith("a\\") and shown.endswith("b") and len(shown) > 3, shown
        assert_clean(shown)
        assert shown.isascii()
    assert visible(HOSTILE) == "\\e]52;c;SGk=\\x07\\e[2J\\eP1$qm\\e\\\\x9b31m\\x08\\r\\n\\u2028\\u202e\\u2066\\u200f"
    # kept as they are: printable text, markup-like brackets, and the joiners words and emoji need
    for kept in ("[bold]x[/bold]", "naïve 猫 ½", "\u200d\u200c", "👩\u200d💻", "a\\b"):
        assert visible(kept) == kept


# ----------------------------------------------------------------------------- Error lines


@pytest.mark.parametrize("command", [
    ["stats"], ["connectivity"], ["filters", "--layer", 1, "--out", "OUT"], ["features", "IMG", "--layer", 1, "--out", "OUT"],
    ["project", "IMG", "--layer", 1, "--out", "OUT"], ["top", "IMGS", "--layer", 1, "--out", "OUT"],
    ["cam", "IMG", "--out", "OUT"], ["dream", "--layer", 1, "--channel", 0, "--out", "OUT"], ["profile"], ["diff"],
    ["report", "IMGS", "--out", "OUT"],
])
def test_error_naming_a_tensor_or_a_model_path_is_escaped(files, command, tmp_path):
    """A damaged model whose node reads an undefined tensor named with escapes, and a missing model
    whose path holds them: one clean Error line that still shows the name, escaped."""
    def args(model):
        places = {"IMG": files["npy"], "IMGS": files["images"], "OUT": tmp_path}
        return [command[0], model, *(places.get(a, a) for a in command[1:])]

    line = error_line(run(*args(files["damaged"])), 1)
    assert "reads 'u\\e]52;c;SGk=\\x07\\e[2J" in line and "\\u202e" in line, line
    line = error_line(run(*args(files["dir"] / f"nosuch{HOSTILE}.onnx")), 1)
    assert "nosuch\\e]52;c;SGk=" in line, line


def test_errors_naming_arguments_are_escaped(files, tmp_path):
    """Usage errors quoting what was typed, cnncli's and click's own; files and folders named
    on the command line; the model's own preprocessing metadata."""
    typed = "x" + HOSTILE
    cases = [
        (["stats", files["plain"], "--sort", typed], 2),
        (["stats", files["plain"], "--columns", typed], 2),
        (["stats", files["plain"], "--input-shape", f"{typed}=1x3x16x16"], 2),
        (["stats", files["plain"], "--format", typed], 2),
        (["stats", files["plain"], typed], 2),  # click: "Got unexpected extra argument (…)"
        (["stats", files["plain"], "--" + typed], 2),
        ([typed], 2),
        (["--" + typed], 2),
        (["project", files["plain"], files["npy"], "--tensor", typed, "--out", tmp_path], 2),
        (["project", files["plain"], files["dir"] / f"nosuch{HOSTILE}.png", "--layer", 1, "--out", tmp_path], 1),
        (["features", files["plain"], STAR, "--layer", 1, "--out", files["blocker"] / "sub"], 1),
        (["filters", files["plain"], "--layer", 1, "--out", files["blocker"] / "sub"], 1),
        (["features", files["preset"], STAR, "--layer", 1, "--out", tmp_path], 2),
    ]
    for args, code in cases:
        r = run(*args)
        assert r.exit_code == code, (args, r.exit_code, r.stderr, r.exception)
        assert isinstance(r.exception, SystemExit), (args, repr(r.exception))
        assert_clean(r.stderr)
        assert "Error: " in r.stderr and "\\" in r.stderr.split("Error: ", 1)[1], (args, r.stderr)
    r = run()  # `cnn` alone: still the help (its lines are not an error to escape)
    assert "Commands:" in r.output and "stats" in r.output and "Error" not in r.output, r.output


# ----------------------------------------------------------------------------- warnings, tables, data


def test_top_warning_and_table_name_image_files_escaped(files, tmp_path):
    """An unreadable image named with escapes: one clean Warning line; the readable one named with
    them shows escaped in the table and exact in the JSON."""
    r = run("top", files["plain"], files["images"], "--layer", 1, "--channel", 0, "-k", 1, "--out", tmp_path, "--quiet")
    assert r.exit_code == 0, (r.stderr, r.exception)
    assert_clean(r.stdout, r.stderr)
    assert "Warning: " in r.stderr and "junk\\e]52;c;SGk=\\x07" in r.stderr and "\\u202e" in r.stderr, r.stderr
    assert "star\\e]52;c;SGk=" in r.stdout
    r = run("top", files["plain"], files["images"], "--layer", 1, "--channel", 0, "-k", 1, "--out", tmp_path, "--quiet",
            "--format", "json")
    assert json.loads(r.stdout)["channels"][0]["entries"][0]["image"] == str(files["images"] / f"star{HOSTILE}.png")


@pytest.mark.parametrize("model", ["plain", "named"])
def test_tables_escape_and_data_formats_stay_exact_on_a_pipe(files, model, tmp_path):
    """On a pipe the table and Markdown show names escaped (they are for people); JSON, JSONL and
    CSV hold them exactly (JSON as ASCII escapes)."""
    path = files[model]
    commands = [
        ["stats", path], ["connectivity", path], ["filters", path, "--layer", 1, "--out", tmp_path],
        ["features", path, STAR, "--layer", 1, "--out", tmp_path],
        ["project", path, files["npy"], "--layer", 1, "--channel", 0, "--out", tmp_path, "--quiet"],
        ["project", path, files["npy"], "--tensor", "y", "--channel", 0, "--mode", "backprop", "--integrated", 2,
         "--out", tmp_path, "--quiet"],
        ["cam", path, files["npy"], "--layer", "t" + HOSTILE, "--tensor", "y", "--channel", 0, "--out", tmp_path, "--quiet"],
        ["dream", path, "--tensor", "t" + HOSTILE, "--channel", 0, "--steps", 2, "--size", 16, "--out", tmp_path, "--quiet"],
        ["profile", path, "--runs", 1, "--warmup", 0, "--quiet"], ["profile", path, "--runs", 1, "--warmup", 0, "--by", "op"],
        ["diff", path, path, "--quiet"],
        ["report", path, files["images"], "--layers", 1, "--per-image", 1, "--out", tmp_path / "report", "--quiet"],
    ]
    for args in commands:
        for fmt in ("table", "markdown"):
            r = run(*args, "--format", fmt)
            assert r.exit_code == 0, (args, r.stderr, r.exception)
            assert_clean(r.stdout, r.stderr)
        r = run(*args, "--format", "json")
        assert r.exit_code == 0 and r.stdout.isascii(), (args, r.stderr)
        assert_clean(r.stdout, r.stderr)
        doc = json.loads(r.stdout)
        assert (doc["model"] if "model" in doc else doc["b"]["model"]) == str(path), args  # (diff: A and B)
    exact = run("stats", path, "--format", "csv").stdout_bytes.decode()  # (Result.stdout folds \r\n)
    rows = list(csv.DictReader(io.StringIO(exact, newline="")))
    assert rows[0]["name"] == "conv" + HOSTILE
    assert json.loads(run("stats", path, "--format", "jsonl").stdout.splitlines()[0])["name"] == "conv" + HOSTILE


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_csv_on_a_terminal_is_escaped_and_exact_in_a_pipe(files, monkeypatch):
    import cnncli
    from cnncli.render import render

    monkeypatch.setenv("NO_COLOR", "1")  # the table's own bold headers aside, no ESC at all

    doc = cnncli.stats(str(files["named"])).document()
    for fmt in ("csv", "table", "markdown", "json", "jsonl"):
        screen = _Terminal()
        render(doc, fmt, screen)
        assert_clean(screen.getvalue())
    pipe = io.StringIO()
    render(doc, "csv", pipe)
    assert list(csv.reader(io.StringIO(pipe.getvalue())))[1][1] == "conv" + HOSTILE
    screen = _Terminal()
    render(doc, "csv", screen)
    assert list(csv.reader(io.StringIO(screen.getvalue())))[1][1] == "conv" + visible(HOSTILE)


# ----------------------------------------------------------------------------- figure titles


def test_newline_in_model_path_or_tensor_name_does_not_crash_figures(files, tmp_path):
    """The projection figure's title names the model file and the tensor; the cost plot names the
    layers (``$`` in them is not mathtext)."""
    r = run("project", files["named"], files["npy"], "--tensor", "t" + HOSTILE, "--channel", 0, "--out", tmp_path,
            "--quiet", "--format", "json")
    assert r.exit_code == 0, (r.stderr, r.exception)
    assert_clean(r.stderr)
    figure = json.loads(r.stdout)["results"][0]["files"]["figure"]
    assert os.path.getsize(figure) > 0
    dollars = hostile_model()
    dollars.graph.node[0].name = "$\\nosuchsymbol^{$" + HOSTILE
    onnx.save(dollars, tmp_path / "d.onnx")
    r = run("stats", tmp_path / "d.onnx", "--plot", tmp_path / "p.png", "--format", "json")
    assert r.exit_code == 0, (r.stderr, r.exception)
    assert r.stderr == "" and (tmp_path / "p.png").stat().st_size > 0


def test_cam_figure_title_escapes_the_image_name_and_is_not_mathtext(files, tmp_path):
    """`cnn cam`'s figure title names the image file: a name with ``$…$`` once crashed it with
    matplotlib's mathtext traceback, and raw controls in it reached stderr in matplotlib's own
    "Glyph missing" warnings."""
    images = tmp_path / "imgs"
    images.mkdir()
    shutil.copy(STAR, images / f"star{HOSTILE}.png")  # (HOSTILE holds one $: mathtext needs two)
    shutil.copy(STAR, images / "$\\nosuchsymbol^{$.png")
    r = run("cam", files["named"], images, "--layer", 1, "--tensor", "y", "--channel", 0, "--out", tmp_path / "o",
            "--quiet", "--format", "json")
    assert r.exit_code == 0, (r.stderr, r.exception)
    assert r.stderr == ""
    results = json.loads(r.stdout)["results"]
    assert len(results) == 2 and all(os.path.getsize(m["files"]["figure"]) > 0 for m in results)


# ----------------------------------------------------------------------------- a real terminal


def terminal_bytes(args: list[str], cols: int = 100) -> tuple[int, bytes]:
    """Exit status and every byte ``cnn args`` writes to a pseudo-terminal (stdout and stderr),
    with nothing of ours coloured (TERM=dumb, NO_COLOR): any ESC in it came from a name."""
    env = {"TERM": "dumb", "NO_COLOR": "1", "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return pty_bytes([sys.executable, "-m", "cnncli", *args], cols, timeout=120, env_extra=env)


def test_nothing_raw_reaches_a_real_terminal(files, tmp_path):
    """Table, CSV, JSON and Markdown of a model whose names and path hold escapes, a warning naming
    an image file, and an Error line, all on a terminal: no ESC, BEL, C1 or bidi control."""
    model = str(files["named"])
    for fmt in ("table", "csv", "json", "markdown"):
        code, data = terminal_bytes(["stats", model, "--format", fmt])
        assert code == 0, data
        text = data.decode("utf-8")
        assert_clean(text.replace("\r\n", "\n"))
        assert re.search(r"(\\e\\?|\\u001b)\]52;c;SGk=", text), text  # the name is there, escaped
    code, data = terminal_bytes(["top", model, str(files["images"]), "--layer", "1", "--channel", "0", "-k", "1",
                                 "--out", str(tmp_path), "--format", "csv"])
    assert code == 0 and b"Warning: " in data, data
    assert_clean(data.decode("utf-8").replace("\r\n", "\n"))
    code, data = terminal_bytes(["stats", str(files["damaged"])])
    assert code == 1 and data.startswith(b"Error: "), data
    assert_clean(data.decode("utf-8").replace("\r\n", "\n"))
