"""Issue 19: terminal tables at 80 columns that can be used as they are: paths never cut, layer
names that stay distinct when shortened, op types whole, and a line on stderr naming the columns
left out. Rendered in-process into a stream that says it is a terminal (as test_render.py does),
and once in a real pseudo-terminal (test_terminal_pty.run_in_pty)."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

from onnx import helper

import cnncli
from cnncli.render import render
from cnncli.render.text import width
from helpers import REPO, ZFNET_PAPER, init, make_model, out, vi

ANSI = re.compile(r"\x1b\[[0-9;]*m")
YOLO = REPO / "tests" / "fixtures" / "exporters_more" / "yolo11_w16.ultralytics.onnx"
MINI = REPO / "sample_models" / "zfnet_mini.onnx"
STAR = REPO / "sample_models" / "images" / "star.png"


class Terminal(io.StringIO):
    encoding = "utf-8"

    def isatty(self) -> bool:
        return True


def on_terminal(doc, cols: int, monkeypatch, **kw) -> tuple[list[str], list[str]]:
    """(stdout lines, notes) of ``doc`` rendered as a table on a terminal ``cols`` wide."""
    monkeypatch.setenv("COLUMNS", str(cols))
    stream, notes = Terminal(), []
    render(doc, "table", stream, note=notes.append, **kw)
    return ANSI.sub("", stream.getvalue()).splitlines(), notes


def name_cells(lines: list[str]) -> list[str]:
    return [line.strip("│").split("│")[1].strip() for line in lines if line.startswith("│")]


def test_yolo_names_stay_distinct_at_80_columns(monkeypatch):
    doc = cnncli.stats(str(YOLO)).document()
    names = [r.name for r in doc.rows]
    assert len(set(names)) == len(names)
    lines, notes = on_terminal(doc, 80, monkeypatch)
    assert all(width(line) <= 80 for line in lines)
    shown = name_cells(lines)
    assert len(shown) == len(names)
    assert len(set(shown)) == len(shown), "two rows read the same"  # was /mo…nv/Conv many times
    for full, cell in zip(names, shown):  # each a shortening of its own name: start…end
        head, _, tail = cell.partition("…")
        assert full.startswith(head) and full.endswith(tail)
    # what was left out to make room is said, with how to see it
    note = " ".join(notes)
    assert "not shown" in note and "--wide" in note and "--columns" in note and "RF" in note


def test_op_types_stay_whole_while_a_long_name_can_give_room(monkeypatch):
    long = "/backbone/features.12/block/block.2/fc2/HardSwish_quantized_output"
    model = make_model([helper.make_node("Conv", ["x", "W"], ["c"], name=long.replace("HardSwish", "Conv")),
                        helper.make_node("HardSwish", ["c"], ["y"], name=long)],
                       [vi("x", [1, 3, 8, 8])], [out()], [init("W", [4, 3, 3, 3])])
    doc = cnncli.stats(model).document()
    for cols in (80, 120):
        lines, _ = on_terminal(doc, cols, monkeypatch)
        assert any(" HardSwish " in line for line in lines), (cols, lines)  # was Ha…Swish at 120


def test_a_note_names_the_hidden_columns(monkeypatch):
    doc = cnncli.stats(str(ZFNET_PAPER)).document()
    _, notes = on_terminal(doc, 80, monkeypatch)
    note = " ".join(notes)
    for header in ("input", "kernel", "stride", "other FLOPs", "act bytes", "RF stride"):
        assert header in note
    assert all(width(n) <= 80 for n in notes)
    _, notes = on_terminal(doc, 400, monkeypatch, wide=True)
    assert notes == []  # every column shown: nothing to say


def test_project_paths_are_never_cut(tmp_path, monkeypatch):
    out = tmp_path / "two  spaces"  # a path the old two-space join of a row's files would split
    res = cnncli.project(str(MINI), str(STAR), layer=2, channels=[3, 9, 11], save_npy=True, out=str(out))
    lines, _ = on_terminal(res.document(), 80, monkeypatch)
    text = "\n".join(lines)
    assert len(res.files) == 3 * 3 + 1
    for f in res.files:  # every file whole on a line of its own, after what it belongs to
        assert any(line.endswith(f" {f}") for line in lines), f
    assert "…" not in text
    table = [line for line in lines if line.startswith(("┏", "┃", "│", "└"))]
    assert all(width(line) <= 80 for line in table)


def test_project_paths_whole_in_a_real_terminal(tmp_path):
    from test_terminal_pty import run_in_pty

    code, text = run_in_pty([sys.executable, "-m", "cnncli", "project", str(MINI), str(STAR), "--layer", "2",
                             "--channel", "3,9", "--out", str(tmp_path)], 80)
    assert code == 0, text
    written = sorted(p for p in tmp_path.iterdir())
    assert len(written) == 2 * 2 + 1
    for p in written:
        assert f" {p}" in text, p  # copyable: the whole path on one line
    assert Path(str(written[0])).is_file()


def test_cam_table_keeps_image_paths_whole_and_lists_the_maps_below(tmp_path, monkeypatch):
    """cnn cam at 80 columns: the input image paths (a long folder) are never cut, the map files
    are listed whole under the table, one a line without the image path before them, and the
    --evaluate columns that hold nothing are not reported as hidden."""
    monkeypatch.chdir(tmp_path)
    image = Path("a_rather_long_folder_name_for_the_pictures", "of_the_shapes", "star.png")
    image.parent.mkdir(parents=True)
    image.write_bytes(STAR.read_bytes())
    result = cnncli.cam(str(MINI), str(image), top=2, out="o")
    lines, notes = on_terminal(result.document(), 80, monkeypatch)
    assert all(width(line) <= 80 for line in lines)
    assert sum(str(image) in line for line in lines) == 3  # the title's and each row's, whole
    files = [p for r in result.document().rows for p in r.files.values()]
    assert len(files) == 4 and all(f in lines for f in files)  # each whole, on a line of its own
    assert not any("auc" in n or "road" in n for n in notes)
