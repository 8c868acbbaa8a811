"""`cnn report MODEL IMAGES --out DIR` read back without a browser: every picture the page shows is
a PNG in DIR (relative, lazy-loaded, nothing from the network, no script), every number labelled,
a section per requested layer with its filters, its strongest channels' top k and their
projections, class maps per image; names from a hostile model reach the page only escaped; the
CLI and the Python API give the same page; a second run replaces only its own files."""

from __future__ import annotations

import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import helper
from PIL import Image

import cnncli
from cnncli.cli import cli
from cnncli.escaping import visible
from helpers import PNG_MAGIC, REPO, assert_one_line_error, init, make_model, out, vi

MINI = REPO / "sample_models" / "zfnet_mini.onnx"
IMAGES = REPO / "sample_models" / "images"
HOSTILE = "<script>alert('x')</script>\"'><img src=x onerror=alert(1)>&amp;\x1b[2J\u202e\x07"
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


class Page(HTMLParser):
    """What a reader of the page gets: its pictures, sections, links and visible text."""

    def __init__(self, text: str):
        super().__init__()
        self.imgs, self.ids, self.links, self.tags, self.text = [], [], [], [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(a)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "a":
            self.links.append(a.get("href"))

    def handle_data(self, data):
        self.text.append(data)

    @property
    def words(self) -> str:
        return " ".join(self.text)


def report(*args) -> dict:
    r = CliRunner().invoke(cli, ["report", *map(str, args), "--format", "json", "--quiet"])
    assert r.exit_code == 0, (r.stderr, r.exception)
    return json.loads(r.stdout)


def read_back(folder: Path) -> Page:
    page = Page((folder / "index.html").read_text(encoding="utf-8"))
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    assert page.imgs, "the page shows no picture"
    for a in page.imgs:
        src = a["src"]
        assert src.startswith("img/") and ".." not in src, src  # relative, inside DIR: opens from disk
        assert a["loading"] == "lazy" and a["alt"], a
        data = (folder / src).read_bytes()
        assert data[:8] == PNG_MAGIC, src
        with Image.open(folder / src) as im:
            assert im.width >= 1 and im.height >= 1
            w, h = int(a["width"]), int(a["height"])  # shown in the picture's own proportions
            assert abs(w / h - im.width / im.height) < 0.1 * max(1, im.width / im.height) + 2 / min(w, h), src
    for href in page.links:  # the table of contents points at sections of the page
        assert href.startswith("#") and href[1:] in page.ids, href
    return page


def nonblank(path: Path) -> bool:
    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB"), dtype=np.float64)
    return a.std() > 2 and len(np.unique(a.reshape(-1, 3), axis=0)) > 8


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report") / "rep"
    doc = report(MINI, IMAGES, "--out", folder, "--layers", "1,3", "-k", 2, "--channels", 3, "--top", 2,
                 "--per-image", 3)
    return folder, doc


def test_a_section_per_requested_layer_with_filters_top_k_and_projections(mini):
    folder, doc = mini
    page = read_back(folder)
    assert [r["layer"] for r in doc["layers"]] == [1, 3]
    assert "layer-1" in page.ids and "layer-3" in page.ids and "layer-2" not in page.ids
    assert {"costs", "connectivity", "images"} <= set(page.ids)
    srcs = [a["src"] for a in page.imgs]
    for r in doc["layers"]:
        n = r["layer"]
        assert r["channels"] == 3 and r["tiles"] == 3 * 2  # 3 channels, top 2 each
        assert f"img/l{n}_filters.png" in srcs and nonblank(folder / f"img/l{n}_filters.png")
        assert sum(s.startswith(f"img/l{n}_c") and s.endswith("_projection.png") for s in srcs) == r["tiles"]
        assert sum(s.startswith(f"img/l{n}_c") and s.endswith("_patch.png") for s in srcs) == r["tiles"]
        maps = [s for s in srcs if s.startswith(f"img/l{n}_c") and s.endswith("_map.png")]
        assert len(maps) == 3 and all(nonblank(folder / s) for s in maps)
        assert r["projections"] == 2 * 3  # --top 2 for each of the --per-image 3 images
    assert nonblank(folder / "img" / "cost.png")
    assert sum("_cam" in s for s in srcs) == 3 * 3  # 3 images, their 3 best classes each
    assert doc["page"] == str(folder / "index.html") and doc["scanned"] >= 5
    files = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    assert files == {s for s in srcs} | {"index.html", "stats.json", ".cnn-report-files.json"}  # nothing unshown


def test_every_number_is_labelled(mini):
    folder, _ = mini
    words = read_back(folder).words
    for label in ("MACs", "multiply-accumulates per image", "params (learned scalars)", "CPR (MACs/weight)",
                  "RF (px)", "act bytes", "bytes of the layer's output for one image", "output (N×C×H×W)",
                  "full (weights)", "local/shared (×)", "weights with one unshared window per output unit",
                  "Totals", "best activation", "act ", "at [", "receptive field", "score", "filters, weights",
                  "top-k images per channel (-k)", "channels per layer (--channels)"):
        assert label in words, label
    totals = cnncli.stats(MINI).totals
    assert f"{totals['macs']:,}" in words and f"{totals['params']:,}" in words


def test_the_pages_columns_are_the_rows_own():
    """The page's tables take their headers, units and meanings from the row dataclasses (one
    source of columns): every column it shows exists there and says what it means."""
    from cnncli.columns import described
    from cnncli.costs.connectivity import ConnectivityRow
    from cnncli.costs.stats import LayerRow
    from cnncli.render.report_html import CONN_COLUMNS, STATS_COLUMNS

    for row_type, names in ((LayerRow, STATS_COLUMNS), (ConnectivityRow, CONN_COLUMNS)):
        got = described(row_type, names)
        assert [name for name, _, _ in got] == list(names)
        assert all(meaning for _, _, meaning in got)
    heads = {name: head for name, head, _ in described(LayerRow, STATS_COLUMNS)}
    assert heads["rf"] == "RF (px)" and heads["name"] == "name"


def test_cli_and_python_give_the_same_page(tmp_path):
    from test_command_shape import same

    args = dict(layers=[2], k=1, channels=2)
    doc = report(MINI, IMAGES, "--out", tmp_path / "a", "--layers", 2, "-k", 1, "--channels", 2)
    res = cnncli.report(MINI, str(IMAGES), out=tmp_path / "b", **args)
    same(doc, [], res, tmp_path / "a", tmp_path / "b", unlisted=(".cnn-report-files.json",))
    assert (tmp_path / "a" / "index.html").read_text().replace(str(tmp_path / "a"), "") == \
        (tmp_path / "b" / "index.html").read_text().replace(str(tmp_path / "b"), "")


def hostile_model() -> onnx.ModelProto:
    nodes = [helper.make_node("Conv", ["x", "W"], ["t" + HOSTILE], name="conv" + HOSTILE, pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["t" + HOSTILE], ["r" + HOSTILE], name="relu" + HOSTILE),
             helper.make_node("Conv", ["r" + HOSTILE, "W2"], ["y"], name="c2" + HOSTILE, pads=[1, 1, 1, 1])]
    rng = np.random.default_rng(0)
    weights = [init("W", [4, 3, 3, 3], value=rng.standard_normal(108)), init("W2", [5, 4, 3, 3], value=rng.standard_normal(180))]
    m = make_model(nodes, [vi("x", [1, 3, 16, 16])], [out("y")], weights)
    m.metadata_props.add(key="note" + HOSTILE, value="v" + HOSTILE)
    m.graph.name = "g" + HOSTILE
    return m


def hostile_inputs(tmp_path: Path) -> tuple[Path, Path]:
    """The hostile model saved, and a folder holding one picture whose name is markup."""
    model = tmp_path / "m.onnx"
    onnx.save(hostile_model(), model)
    images = tmp_path / "imgs"
    images.mkdir()
    shutil.copy(IMAGES / "star.png", images / "<img src=x onerror=alert(1)>st'a\"r.png")
    shutil.copy(IMAGES / "star.png", os.path.join(os.fsencode(images), b"\xff\x1b]0;x\x07.png"))  # not UTF-8
    return model, images


def test_hostile_names_reach_the_page_escaped(tmp_path):
    model, images = hostile_inputs(tmp_path)
    folder = tmp_path / "rep"
    r = CliRunner().invoke(cli, ["report", str(model), str(images), "--out", str(folder), "--top", "1", "--quiet",
                                 "--format", "json"])
    assert r.exit_code == 0, r.stderr
    assert "no class maps" in r.stderr  # no class scores in this model: said once, the page goes on
    text = (folder / "index.html").read_text(encoding="utf-8")
    page = read_back(folder)
    assert HOSTILE not in text and "<script" not in text.lower() and "<img src=x" not in text
    assert RAW.search(text) is None  # control and bidi characters, undecodable bytes: shown as escapes
    assert "conv" + visible(HOSTILE) in page.words  # the markup shown as text, the controls as escapes
    assert all(set(a) == {"src", "width", "height", "loading", "decoding", "alt", "title"} for a in page.imgs)


def test_bad_options_are_usage_errors(tmp_path):
    for args in (["--layers", "9"], ["--layers", "0"], ["--layers", "x"], ["--channels", "x"], ["--channels", "0"],
                 ["-k", "0"]):
        r = CliRunner().invoke(cli, ["report", str(MINI), str(IMAGES), "--out", str(tmp_path / "o"), *args])
        assert_one_line_error(r, 2)
    assert not (tmp_path / "o").exists()
    with pytest.raises(cnncli.BadArgument) as info:
        cnncli.report(MINI, IMAGES, out=tmp_path / "o", channels="many")
    assert info.value.param == "--channels"


def test_no_readable_image_is_a_one_line_error_and_writes_no_page(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(b"not a picture")
    r = CliRunner().invoke(cli, ["report", str(MINI), str(tmp_path / "imgs"), "--out", str(tmp_path / "o"), "--quiet"])
    assert "no readable images" in assert_one_line_error(r, 1)
    assert not (tmp_path / "o" / "index.html").exists()


def test_a_second_run_replaces_its_own_pictures_only(tmp_path):
    folder = tmp_path / "rep"
    folder.mkdir()
    (folder / "mine.txt").write_text("the user's")
    report(MINI, IMAGES, "--out", folder, "--layers", "1,2", "-k", 2, "--channels", 2)
    first = {p.name for p in (folder / "img").iterdir()}
    report(MINI, IMAGES, "--out", folder, "--layers", "2", "-k", 1, "--channels", 1)
    left = {p.name for p in (folder / "img").iterdir()}
    shown = {a["src"][4:] for a in read_back(folder).imgs}
    assert left == shown and len(left) < len(first)
    assert (folder / "mine.txt").read_text() == "the user's"


def test_progress_goes_to_stderr_and_stdout_is_the_table(tmp_path):
    r = CliRunner().invoke(cli, ["report", str(MINI), str(IMAGES), "--out", str(tmp_path / "o"), "--layers", "1",
                                 "-k", "1", "--channels", "1"])
    assert r.exit_code == 0, r.stderr
    assert "layer 1" in r.stderr and "scanning" in r.stderr
    assert "index.html" in r.stdout and "scanning" not in r.stdout


def test_the_scan_is_ticked_image_by_image(tmp_path):
    """``tick`` (the command's progress bar) hears the image count first, then every image once,
    an unreadable one included (the scan went past it)."""
    from cnncli.api.report import ReportOptions, run

    folder = tmp_path / "imgs"
    shutil.copytree(IMAGES, folder)
    (folder / "broken.png").write_bytes(b"not a png")
    n = sum(1 for p in folder.iterdir() if p.is_file())
    calls = []
    run(str(MINI), str(folder), ReportOptions(out=str(tmp_path / "o"), layers=[1], k=1, channels=1, batch_size=3),
        tick=lambda k, total=None: calls.append((k, total)), on_warning=lambda w: None)
    assert calls[0] == (0, n)
    assert all(t is None and 0 < k <= 3 for k, t in calls[1:]) and sum(k for k, _ in calls[1:]) == n


def test_counts_at_int64s_largest_take_all_there_is(tmp_path):
    """-k, --top and --batch-size at int64's largest: as many as there are (images, channels), no crash."""
    huge = 2**63 - 1
    doc = report(MINI, IMAGES, "--out", tmp_path / "o", "--layers", 1, "-k", huge, "--channels", 2, "--top", huge,
                 "--per-image", 1, "--batch-size", huge)
    n = doc["scanned"]
    assert doc["k"] == n and doc["layers"][0]["tiles"] == 2 * n and doc["layers"][0]["projections"] == 48
