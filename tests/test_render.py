"""The renderer (cnncli/render): terminal layouts that fit, pipe tables as rich printed them,
machine formats exact and strict, text printed verbatim, any stream encoding.

Terminal layouts are rendered in-process into a stream that says it is a terminal, with the
width given by COLUMNS (as a terminal's would be); test_terminal_pty.py does the same in a real
pseudo-terminal.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re

import onnx
import pytest
from click.testing import CliRunner
from onnx import helper

from cnncli.cli import cli
from cnncli.render import Document, render
from cnncli.render.text import human, shorten_middle, visible, width
from cnncli.costs.stats import LayerRow, OpRow, by_op
from helpers import ZFNET_PAPER, conv_model, init, make_model, out, save, stats_of, vi

ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Terminal(io.StringIO):
    encoding = "utf-8"

    def isatty(self) -> bool:
        return True


class Pipe(io.StringIO):
    encoding = "utf-8"

    def isatty(self) -> bool:
        return False


def zf_doc(by: str = "layer") -> Document:
    result = stats_of(onnx.load(str(ZFNET_PAPER)))
    rows, row_type = (by_op(result.layers), OpRow) if by == "op" else (result.layers, LayerRow)
    return Document(rows=rows, row_type=row_type, totals=result.totals, title="sample_models/zfnet_paper.onnx  (image 1x3x224x224)")


def on_terminal(doc: Document, cols: int, monkeypatch, **kw) -> list[str]:
    monkeypatch.setenv("COLUMNS", str(cols))
    stream = Terminal()
    render(doc, "table", stream, **kw)
    return ANSI.sub("", stream.getvalue()).splitlines()


def number_forms(value) -> set[str]:
    return {f"{value:,}", human(value)}


# ----------------------------------------------------------------------------- text helpers


def test_human_units():
    assert human(999) == "999"
    assert human(14_208) == "14.2K"
    assert human(170_755_200) == "170.8M"
    assert human(1_168_032_896) == "1.2G"
    assert human(999_950) == "1.0M"  # rounds up a unit, never "1000.0K"
    assert human(-2_500) == "-2.5K"


def test_shorten_middle_keeps_both_ends_and_the_width():
    name = "features.denseblock4.denselayer16.conv2"
    short = shorten_middle(name, 20)
    assert short == "featur…layer16.conv2"  # a third of the room for the start, two thirds for the end
    assert shorten_middle("short", 20) == "short"
    wide = shorten_middle("宽" * 30, 21)
    assert width(wide) <= 21 and wide.startswith("宽") and wide.endswith("宽")


def test_control_characters_become_visible():
    assert visible("a\nb\tc\x1b[31m") == "a\\nb\\tc\\e[31m"
    assert visible("[bold]x[/bold]") == "[bold]x[/bold]"


# ----------------------------------------------------------------------------- terminal tables


@pytest.mark.parametrize("cols", [40, 60, 80, 100, 120, 200])
def test_terminal_table_fits_and_never_splits_a_number(cols, monkeypatch):
    doc = zf_doc()
    lines = on_terminal(doc, cols, monkeypatch)
    assert all(width(line) <= cols for line in lines), max(lines, key=width)
    text = "\n".join(lines)
    for r in doc.rows:  # every MACs and params value whole on one line, exact or in human units
        for value in (r.macs, r.params):
            assert any(f in line for line in lines for f in number_forms(value)), (cols, r.name, value)
        assert r.name in text  # zfnet's names are short: never shortened
    for key in ("macs", "params"):
        assert f"{doc.totals[key]:,}" in text  # totals stay exact


def test_terminal_80_columns_shows_the_compact_set(monkeypatch):
    lines = on_terminal(zf_doc(), 80, monkeypatch)
    header = next(line for line in lines if line.startswith("┃"))
    cells = [c.strip() for c in header.strip("┃").split("┃")]
    assert cells == ["#", "name", "op", "output", "MACs", "params", "CPR", "RF"]
    assert len(lines) < 60  # 21 rows: was 232 lines at 80 columns with every column folded
    row = next(line for line in lines if " conv1 " in line)
    assert "170.8M" in row and "1x96x110x110" in row


def test_terminal_120_columns_keeps_exact_numbers(monkeypatch):
    lines = on_terminal(zf_doc(), 120, monkeypatch)
    row = next(line for line in lines if " conv1 " in line)
    assert "170,755,200" in row and "14,208" in row and "12,100" in row


def test_wide_and_columns_on_a_terminal(monkeypatch):
    lines = on_terminal(zf_doc(), 400, monkeypatch, wide=True)
    assert "other FLOPs" in "\n".join(lines) and "RF stride" in "\n".join(lines)
    lines = on_terminal(zf_doc(), 80, monkeypatch, columns=["name", "macs", "rf_stride"])
    header = next(line for line in lines if line.startswith("┃"))
    assert [c.strip() for c in header.strip("┃").split("┃")] == ["name", "MACs", "RF stride"]
    assert "170,755,200" in "\n".join(lines)  # room enough: exact


def test_narrow_terminal_gives_records_with_no_empty_cells(monkeypatch):
    doc = zf_doc()
    lines = on_terminal(doc, 40, monkeypatch)
    assert not any(line.startswith(("┃", "│")) for line in lines)  # records, not a squeezed box
    firsts = [line for line in lines if line.startswith(("# ", "name "))]
    assert len(firsts) == len(doc.rows)  # one record per row, each starting flush left
    records = lines[: next(i for i, line in enumerate(lines) if line.startswith("macs "))]  # the totals follow
    assert not any(re.search(r"(^|  )(MACs|params|output|RF|CPR)(  |$)", line) for line in records)  # no header without a value


def test_long_names_are_shortened_in_the_middle(monkeypatch):
    long = "backbone.stage4.block23.bottleneck.conv3.weight_quantized_output_0"
    model = make_model([helper.make_node("Conv", ["x", "W"], ["y"], name=long)], [vi("x", [1, 3, 8, 8])], [out()],
                       [init("W", [4, 3, 3, 3])])
    result = stats_of(model)
    doc = Document(rows=result.layers, row_type=LayerRow, totals=result.totals, title="m.onnx")
    lines = on_terminal(doc, 80, monkeypatch)
    row = next(line for line in lines if line.startswith("│ 1 "))
    assert "│ backbone…" in row and "_output_0 │" in row and long not in row
    assert width(row) <= 80
    piped = Pipe()
    render(doc, "table", piped)
    assert long in piped.getvalue()  # a pipe gets the whole name


# ----------------------------------------------------------------------------- pipes: as rich printed them


def rich_reference(doc: Document) -> str:
    """The table exactly as cnncli printed it to a pipe before: rich at 400 columns (the
    reference benchmarks/check_output.py checks every model and awkward text against)."""
    import importlib.util

    from helpers import REPO

    spec = importlib.util.spec_from_file_location("check_output", REPO / "benchmarks" / "check_output.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reference_table(doc)


@pytest.mark.parametrize("by", ["layer", "op"])
def test_pipe_table_is_unchanged(by):
    doc = zf_doc(by)
    stream = Pipe()
    render(doc, "table", stream)
    assert stream.getvalue() == rich_reference(doc)


# ----------------------------------------------------------------------------- text is data, not markup

MARKUP_NAMES = ["[/]", "[bold red]conv[/bold red]", ":smile:", "a|b\nc"]


def markup_model() -> onnx.ModelProto:
    """x -> Conv '[/]' -> Relu '[bold red]conv[/bold red]' -> Conv ':smile:' -> Relu 'a|b\\nc'."""
    nodes = [
        helper.make_node("Conv", ["x", "W1"], ["t1"], name=MARKUP_NAMES[0]),
        helper.make_node("Relu", ["t1"], ["t2"], name=MARKUP_NAMES[1]),
        helper.make_node("Conv", ["t2", "W2"], ["t3"], name=MARKUP_NAMES[2]),
        helper.make_node("Relu", ["t3"], ["y"], name=MARKUP_NAMES[3]),
    ]
    return make_model(nodes, [vi("x", [1, 3, 8, 8])], [out()], [init("W1", [4, 3, 3, 3]), init("W2", [2, 4, 1, 1])])


@pytest.fixture
def markup_path(tmp_path):
    path = tmp_path / "a[/]b [red]x[/red].onnx"  # folders 'a[' and ']b [red]x[' hold 'red].onnx'
    path.parent.mkdir(parents=True)
    return str(save(markup_model(), path))


def test_names_and_paths_verbatim_in_the_piped_table(markup_path):
    r = CliRunner().invoke(cli, ["stats", markup_path])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].startswith(markup_path)  # the title, path as given
    for name in MARKUP_NAMES[:3]:
        assert any(f"│ {name} " in line for line in lines), name
    assert any("│ a|b\\nc " in line for line in lines)  # a newline cannot split a row
    assert len([line for line in lines if line.startswith("│")]) == 4


def test_names_verbatim_on_a_terminal(markup_path, monkeypatch):
    model = onnx.load(markup_path)
    result = stats_of(model)
    doc = Document(rows=result.layers, row_type=LayerRow, totals=result.totals, title=f"{markup_path}  (x 1x3x8x8)")
    for cols in (40, 120):
        text = "\n".join(on_terminal(doc, cols, monkeypatch))
        for name in ["[/]", ":smile:", "a|b\\nc"]:
            assert name in text
        assert "[bold red]conv[/bold red]" in text or cols < 60  # may be shortened in the middle at 40


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_names_verbatim_in_machine_formats(markup_path, fmt):
    r = CliRunner().invoke(cli, ["stats", markup_path, "--format", fmt])
    assert r.exit_code == 0, r.output
    if fmt == "json":
        data = json.loads(r.stdout)
        names, model = [x["name"] for x in data["layers"]], data["model"]
        assert model == markup_path
    elif fmt == "jsonl":
        names = [json.loads(line)["name"] for line in r.stdout.splitlines()]
    else:
        names = [row["name"] for row in csv.DictReader(io.StringIO(r.stdout))]
    assert names == MARKUP_NAMES


def test_markdown_escapes_pipes_and_line_breaks(markup_path):
    r = CliRunner().invoke(cli, ["stats", markup_path, "--format", "markdown"])
    assert r.exit_code == 0, r.output
    table = [line for line in r.stdout.splitlines() if line.startswith("|")]
    table = table[: table.index("| total | value |")] if "| total | value |" in table else table
    columns = len(re.split(r"(?<!\\)\|", table[0])) - 2
    assert len(table) == 2 + 4  # header, separator, one line per row (the newline did not split one)
    for line in table:
        assert len(re.split(r"(?<!\\)\|", line)) - 2 == columns, line  # unescaped pipes only between cells
    assert "| a\\|b<br>c |" in r.stdout
    assert "\\[bold red\\]conv\\[/bold red\\]" in r.stdout


def test_warnings_print_markup_verbatim_on_one_line(tmp_path):
    model = make_model([helper.make_node("Conv", ["x", "W"], ["t"], name="c"),
                        helper.make_node("Weird[/]Op", ["t"], ["y"], name="[bold]w[/bold]\nz", domain="x[/]y")],
                       [vi("x", [1, 3, 8, 8])], [out()], [init("W", [4, 3, 3, 3])], extra_opsets=[("x[/]y", 1)])
    path = save(model, tmp_path / "m.onnx")
    r = CliRunner().invoke(cli, ["stats", str(path), "--format", "json"])
    assert r.exit_code == 0, r.output
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Warning:"), r.stderr
    assert "x[/]y.Weird[/]Op" in lines[0]
    json.loads(r.stdout)


def test_console_messages_are_verbatim_and_one_line(capsys):
    from cnncli.render.console import info, warn

    warn("node [bold red]conv[/bold red] in a[/]b.onnx\nsecond line")
    info("[/] done :smile:")
    err = capsys.readouterr().err
    assert err.splitlines() == ["Warning: node [bold red]conv[/bold red] in a[/]b.onnx second line", "[/] done :smile:"]


def test_filters_title_shows_the_model_path_verbatim(tmp_path):
    import shutil

    from helpers import REPO

    path = tmp_path / "zf[/]mini [bold]x[/bold].onnx"
    path.parent.mkdir(parents=True)
    shutil.copy(REPO / "sample_models" / "zfnet_mini.onnx", path)
    r = CliRunner().invoke(cli, ["filters", str(path), "--layer", "1", "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0].startswith(f"{path} · layer 1")


# ----------------------------------------------------------------------------- encodings


class Ascii(io.TextIOWrapper):
    def __init__(self):
        super().__init__(io.BytesIO(), encoding="ascii")

    def text(self) -> str:
        self.flush()
        return self.buffer.getvalue().decode("ascii")


@pytest.mark.parametrize("fmt", ["table", "csv", "markdown", "json", "jsonl"])
def test_ascii_stream_gets_ascii(fmt):
    from cnncli.api.features import FeatureRow

    rows = [FeatureRow(channel=1, max=1.5, mean=0.25, zero_fraction=0.5)]
    doc = Document(rows=rows, row_type=FeatureRow, title="m.onnx · layer 1 (relu…) on ünïcode 宽.png")
    stream = Ascii()
    render(doc, fmt, stream)
    text = stream.text()
    assert text.isascii() and "1.5" in text
    if fmt in ("table", "markdown"):
        assert "m.onnx - layer 1 (relu...) on" in text


def test_ascii_csv_of_non_ascii_names(tmp_path):
    model = conv_model([1, 3, 8, 8], [4, 3, 3, 3])
    model.graph.node[0].name = "conv×ünï"
    result = stats_of(model)
    stream = Ascii()
    render(Document(rows=result.layers, row_type=LayerRow), "csv", stream)
    rows = list(csv.DictReader(io.StringIO(stream.text())))
    assert rows[0]["name"] == "convx?n?" and rows[0]["macs"] == str(4 * 6 * 6 * 3 * 3 * 3)


# ----------------------------------------------------------------------------- strict JSON


def test_json_never_contains_nan(capsys):
    from cnncli.api.features import FeatureRow

    rows = [FeatureRow(channel=0, max=float("nan"), mean=float("inf"), zero_fraction=0.0),
            FeatureRow(channel=1, max=2.0, mean=-float("inf"), zero_fraction=0.5)]
    seen = []
    for fmt in ("json", "jsonl"):
        stream = Pipe()
        render(Document(rows=rows, row_type=FeatureRow, rows_key="channels", meta={"best": float("nan")}), fmt, stream, warn=seen.append)

        def strict(c):
            raise AssertionError(f"non-standard JSON constant {c}")

        text = stream.getvalue()
        docs = [json.loads(text, parse_constant=strict)] if fmt == "json" else [json.loads(t, parse_constant=strict) for t in text.splitlines()]
        got = docs[0]["channels"] if fmt == "json" else docs
        assert [g["max"] for g in got] == [None, 2.0] and [g["mean"] for g in got] == [None, None]
        if fmt == "json":
            assert docs[0]["best"] is None
    assert len(seen) == 2 and all("not finite" in s for s in seen)  # once per document
    stream = Pipe()
    render(Document(rows=rows, row_type=FeatureRow), "json", stream)  # default: through the console
    err = capsys.readouterr().err
    assert err.count("Warning:") == 1 and "not finite" in err


def test_json_rows_written_as_json_dumps_writes_them():
    """The JSON writers' encoder, made once (with a row's own __dict__ where that is exactly its
    fields), writes each row as json.dumps of its fields would: a frozen row, one with an
    attribute beyond its fields, a mutable one, nested rows, numpy values; NaN as null."""
    import dataclasses

    import numpy as np

    from cnncli.render.formats import NotFinite

    @dataclasses.dataclass(frozen=True)
    class Frozen:
        b: int
        a: object = None

    @dataclasses.dataclass(frozen=True)
    class Extra:
        a: int

        def __post_init__(self):
            object.__setattr__(self, "z", 1)  # not a field: never written

    @dataclasses.dataclass
    class Mutable:
        y: object
        x: int = 0

    mutable = Mutable([1, 2])
    del mutable.y
    mutable.y = "last in its __dict__"
    rows = [Frozen(2, [1, None, "é\n"]), Frozen(3, Frozen(4)), Extra(5), mutable, Frozen(6, np.int64(7)),
            Frozen(8, np.array([1.5, 2.0]))]
    want = [json.dumps(r) for r in (
        {"b": 2, "a": [1, None, "é\n"]}, {"b": 3, "a": {"b": 4, "a": None}}, {"a": 5}, {"y": "last in its __dict__", "x": 0},
        {"b": 6, "a": 7}, {"b": 8, "a": [1.5, 2.0]})]
    bad = NotFinite()
    assert list(bad.dumps_all(rows)) == want and bad.count == 0
    assert list(bad.dumps_all([Frozen(1, float("nan")), Frozen(2, 0.5)])) == ['{"b": 1, "a": null}', '{"b": 2, "a": 0.5}']
    assert bad.count == 1


# ----------------------------------------------------------------------------- sorting and columns


def zf_json(*args):
    r = CliRunner().invoke(cli, ["stats", str(ZFNET_PAPER), "--format", "json", *args])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)["layers"]


def test_sort_by_receptive_field_is_by_value():
    rows = zf_json("--sort", "rf")
    known = [x["rf"] for x in rows if x["rf"] is not None]
    sizes = [math.prod(v) for v in known]
    assert sizes == sorted(sizes, reverse=True) and known[0] == [171, 171]  # pool5: as text 99 would beat 171
    assert all(x["rf"] is None for x in rows[len(known):])


def test_sort_by_output_shape_is_by_element_count():
    rows = zf_json("--sort", "output_shape")
    sizes = [math.prod(x["output_shape"]) for x in rows]
    assert sizes == sorted(sizes, reverse=True) and rows[0]["output_shape"] == [1, 96, 110, 110]


def test_columns_pick_and_order_csv_and_markdown():
    r = CliRunner().invoke(cli, ["stats", str(ZFNET_PAPER), "--format", "csv", "--columns", "macs,name,RF"])
    assert r.exit_code == 0, r.output
    rows = list(csv.reader(io.StringIO(r.stdout)))
    assert rows[0] == ["macs", "name", "rf"] and rows[1] == ["170755200", "conv1", "7x7"]
    r = CliRunner().invoke(cli, ["stats", str(ZFNET_PAPER), "--format", "markdown", "--columns", "name,params"])
    assert "| name | params |" in r.stdout and "| conv1 | 14,208 |" in r.stdout


def test_unknown_column_is_a_usage_error_naming_the_valid_ones():
    from helpers import assert_one_line_error

    r = CliRunner().invoke(cli, ["stats", str(ZFNET_PAPER), "--columns", "name,bogus"])
    line = assert_one_line_error(r, 2)
    assert "'bogus'" in line and "macs" in line and "rf_stride" in line
    r = CliRunner().invoke(cli, ["stats", str(ZFNET_PAPER), "--by", "op", "--columns", "rf"])
    assert "count" in assert_one_line_error(r, 2)  # checked against the --by op columns
    r = CliRunner().invoke(cli, ["stats", str(ZFNET_PAPER), "--columns", "name", "--wide"])
    assert_one_line_error(r, 2)


def test_columns_are_checked_before_any_work(tmp_path):
    from helpers import assert_one_line_error

    r = CliRunner().invoke(cli, ["top", str(tmp_path / "missing.onnx"), str(tmp_path), "--layer", "1", "--columns", "bogus"])
    assert "channel" in assert_one_line_error(r, 2)  # the column, not the missing model


def test_multi_line_error_messages_become_one_line():
    import click

    from cnncli.cli import CnnGroup
    from cnncli.errors import CnnError
    from helpers import assert_one_line_error

    @click.group(cls=CnnGroup)
    def group():
        pass

    @group.command()
    def boom():
        raise CnnError("first line\n  second line")

    line = assert_one_line_error(CliRunner().invoke(group, ["boom"]), 1)
    assert line == "Error: first line second line"


def test_features_json_of_a_model_with_infinite_activations(tmp_path):
    """Channel 0's weights are infinite and channel 1 has a NaN weight: their max and mean are
    not finite, and the JSON says null (with one warning) instead of NaN or Infinity."""
    import numpy as np

    from helpers import REPO

    w = np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32)
    w[0] = np.inf
    w[1, 0, 0, 0] = np.nan
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"], name="relu1")]
    path = save(make_model(nodes, [vi("x", [1, 3, 16, 16])], [out()], [init("W", [4, 3, 3, 3], value=w)]), tmp_path / "m.onnx")
    image = REPO / "sample_models" / "images" / "star.png"
    r = CliRunner().invoke(cli, ["features", str(path), str(image), "--layer", "1", "--out", str(tmp_path / "o"), "--format", "json"])
    assert r.exit_code == 0, r.output

    def strict(c):
        raise AssertionError(f"non-standard JSON constant {c}")

    channels = {c["channel"]: c for c in json.loads(r.stdout, parse_constant=strict)["channels"]}
    assert channels[0]["max"] is None and channels[1]["mean"] is None
    assert all(isinstance(channels[c]["max"], float) for c in (2, 3))
    assert sum("not finite" in line for line in r.stderr.splitlines()) == 1
