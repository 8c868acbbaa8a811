"""Issue 19: pictures that explain themselves and outputs that can be used as they are.

Every picture is read back (size, not blank, labels drawn where the layout says); the contact
sheet of a multi-channel `cnn project`, the compact `cnn top` overview (its path in every
format), the receptive-field box of `--keep max` figures; CSV with one value per field (read
with the csv module); `--top K` past the channel count; the reverse batch chosen from the memory
estimate. Terminal layouts are in test_terminal_layout.py.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import cnncli
from cnncli.cli import cli
from helpers import REPO

MINI = REPO / "sample_models" / "zfnet_mini.onnx"
STAR = REPO / "sample_models" / "images" / "star.png"
IMAGES = REPO / "sample_models" / "images"
LABEL_H = 17  # a tile's label strip (cnncli.imaging.montage)
BOX = (0, 190, 255)  # the receptive field's colour (cnncli.imaging.figure.BOX)


def invoke(*args):
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert r.exit_code == 0, (r.output, r.exception)
    return r


def rgb(path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


# ----------------------------------------------------------------------------- project


def test_channel_all_writes_a_labelled_contact_sheet(tmp_path):
    """48 channels: one sheet, 7 columns of 96-pixel tiles under their labels, each tile the
    channel's own PNG scaled down; listed in JSON (meta and nothing else changed), CSV and table."""
    from cnncli.imaging.pictures import resize_tile

    doc = json.loads(invoke("project", MINI, STAR, "--layer", 1, "--channel", "all", "--out", tmp_path,
                            "--format", "json").stdout)
    sheet = Path(doc["contact_sheet"])
    assert sheet.is_file() and sheet.parent == tmp_path
    img = rgb(sheet)
    title_h = 16 + 10
    cols, tile, gap = 7, 96, 6
    assert img.shape[1] >= cols * tile + (cols - 1) * gap
    assert img.shape[0] == title_h + 7 * (LABEL_H + tile) + 6 * gap
    assert (img[:title_h] < 100).any()  # the title
    body = img[title_h:]
    x_off = (img.shape[1] - (cols * tile + (cols - 1) * gap)) // 2
    for i, row in enumerate(doc["results"]):  # the order of the rows: channel 0, 1, …
        r, c = divmod(i, cols)
        y0, x0 = r * (LABEL_H + tile + gap), x_off + c * (tile + gap)
        label = body[y0:y0 + LABEL_H, x0:x0 + tile]
        assert (label < 100).any(), f"no label over channel {row['channel']}"
        want = resize_tile(rgb(row["files"]["png"]), tile)
        got = body[y0 + LABEL_H:y0 + LABEL_H + tile, x0:x0 + tile]
        assert np.array_equal(got[:want.shape[0], :want.shape[1]], want)
    assert img.std() > 5  # not blank
    # the sheet's path in CSV (a column) and in the table (a line under it, whole)
    out = invoke("project", MINI, STAR, "--layer", 1, "--channel", "all", "--out", tmp_path,
                 "--format", "csv").stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    assert {r["contact_sheet"] for r in rows} == {str(sheet)}
    table = invoke("project", MINI, STAR, "--layer", 1, "--channel", "all", "--out", tmp_path).stdout
    assert f"contact_sheet: {sheet}" in table.splitlines()


def test_one_channel_has_no_contact_sheet(tmp_path):
    doc = json.loads(invoke("project", MINI, STAR, "--layer", 1, "--channel", 3, "--out", tmp_path,
                            "--format", "json").stdout)
    assert doc["contact_sheet"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(Path(f).name for f in doc["results"][0]["files"].values())


def test_keep_max_figures_show_the_receptive_field(tmp_path):
    """--keep max: the max unit's receptive field (cnn stats' RF at its location, clipped) drawn
    on the input and projection panels; --keep map: no box."""
    from cnncli.costs.receptive import receptive_fields
    from cnncli.engine.model_input import open_for_images
    from cnncli.api.sources import load

    res = cnncli.project(MINI, STAR, layer=2, channels=[3], keep="max", out=str(tmp_path / "max"))
    fig = rgb(res.rows[0].files["figure"])
    cyan = np.all(fig == BOX, axis=2)
    assert cyan.any()
    assert np.array_equal(np.asarray(res.figure(0)), fig)  # the Python figure draws it too
    m = open_for_images(load(str(MINI)), None, None)
    rf = receptive_fields(m.graph)[res.meta["tensor"]]
    y, x = res.rows[0].location
    (y0, y1), (x0, x1) = rf[0].box(y, 112), rf[1].box(x, 112)
    assert res.box_of(res[0]) == [y0, x0, y1, x1]
    # the input panel: 112 pixels enlarged 2x to 224, 8-pixel margin, title 24 + label 19 above
    top, left, f = 8 + 24 + 19, 8, 2
    assert cyan[top + y0 * f, left + (x0 + x1) // 2 * f]  # the box's top edge
    assert cyan[top + (y0 + y1) // 2 * f, left + x0 * f]  # its left edge
    assert not cyan[top + (y0 + y1) // 2 * f, left + (x0 + x1) // 2 * f]  # open inside
    second = left + 224 + 10  # the projection panel has it too
    assert cyan[top + y0 * f, second + (x0 + x1) // 2 * f]
    whole = cnncli.project(MINI, STAR, layer=2, channels=[3], out=str(tmp_path / "map"))
    assert not np.all(rgb(whole.rows[0].files["figure"]) == BOX, axis=2).any()


def test_top_past_the_channel_count_takes_them_all(tmp_path):
    r = CliRunner().invoke(cli, ["project", str(MINI), str(STAR), "--layer", "1", "--top", "100", "--no-figure",
                                 "--out", str(tmp_path), "--format", "json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert sorted(row["channel"] for row in doc["results"]) == list(range(48))
    assert "--top 100" in r.stderr and "48 channels" in r.stderr and "all 48" in r.stderr
    with pytest.warns(cnncli.CnnWarning, match="all 48"):
        res = cnncli.project(MINI, STAR, layer=1, top=60)
    assert len(res) == 48


def test_project_csv_has_one_value_per_field(tmp_path):
    out = invoke("project", MINI, STAR, "--layer", 2, "--channel", "3,9", "--save-npy", "--out", tmp_path,
                 "--format", "csv").stdout
    reader = csv.reader(io.StringIO(out))
    head = next(reader)
    assert head == ["channel", "max_activation", "location", "files.png", "files.figure", "files.npy", "contact_sheet"]
    for row in reader:
        for value in row[3:]:
            assert Path(value).is_file() and "  " not in value


# ----------------------------------------------------------------------------- top


@pytest.fixture(scope="module")
def top_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("top")
    args = ["top", MINI, IMAGES, "--layer", 3, "--channels", 6, "-k", 4, "--quiet", "--out", out]
    return {fmt: invoke(*args, "--format", fmt).stdout for fmt in ("json", "csv", "table", "markdown")}


def test_top_overview_is_compact_with_legible_titles(top_run):
    doc = json.loads(top_run["json"])
    grids = [rgb(row["files"]["grid"]) for row in doc["channels"]]
    overview = rgb(doc["overview"])
    # packed at the grids' own aspect: no square cells, little white
    area = sum(g.shape[0] * g.shape[1] for g in grids)
    assert area / (overview.shape[0] * overview.shape[1]) > 0.6
    assert 1.0 <= overview.shape[1] / overview.shape[0] <= 2.6
    assert overview.std() > 10
    for g in grids:  # each grid under a title whose letters are about 16 pixels high
        ink_rows = np.where((g[:26] < 100).any(axis=(1, 2)))[0]
        assert ink_rows.size and ink_rows.max() - ink_rows.min() + 1 >= 12
        assert (g[26:] != 255).any()  # tiles under it


def test_top_overview_path_in_every_format(top_run):
    overview = json.loads(top_run["json"])["overview"]
    rows = list(csv.DictReader(io.StringIO(top_run["csv"])))
    assert {r["overview"] for r in rows} == {overview}
    assert f"overview: {overview}" in top_run["table"].splitlines()
    assert f"- overview: {overview}" in top_run["markdown"].splitlines()


def test_markdown_cells_of_several_values_hold_one_a_line(top_run, tmp_path):
    """Markdown: `cnn top`'s ranked images and `cnn project`'s files one a line (``<br>``) in their
    cell, never run together with spaces (a path may hold spaces itself)."""
    doc = json.loads(top_run["json"])
    lines = [ln for ln in top_run["markdown"].splitlines() if ln.startswith("| ") and ln[2:3].isdigit()]
    assert len(lines) == len(doc["channels"])
    for line, row in zip(lines, doc["channels"]):
        ranked = line.split(" | ")[2]
        assert ranked.split("<br>") == [f"{Path(e['image']).name}@{e['location'][0]},{e['location'][1]}"
                                        for e in row["entries"]]
    out = tmp_path / "with space"
    md = invoke("project", MINI, STAR, "--layer", 2, "--channel", 3, "--out", out, "--format", "markdown").stdout
    row = [ln for ln in md.splitlines() if ln.startswith("| 3 ")][0]
    files = row.rstrip(" |").split(" | ")[-1].split("<br>")
    assert len(files) == 2 and all(Path(f).is_file() and Path(f).parent == out for f in files)


def test_top_csv_has_one_field_per_rank(top_run):
    doc = json.loads(top_run["json"])
    rows = list(csv.DictReader(io.StringIO(top_run["csv"])))
    assert len(rows) == len(doc["channels"])
    for row, want in zip(rows, doc["channels"]):
        assert row["files.grid"] == want["files"]["grid"]
        for rank, e in enumerate(want["entries"], 1):
            assert row[f"entries.{rank}.image"] == e["image"]
            assert float(row[f"entries.{rank}.activation"]) == e["activation"]
            assert row[f"entries.{rank}.location"] == ",".join(map(str, e["location"]))
            assert row[f"entries.{rank}.box"] == ",".join(map(str, e["box"]))
        assert not any("  " in v for v in row.values())


# ----------------------------------------------------------------------------- memory


def test_reverse_batch_from_the_memory_estimate(monkeypatch):
    """One channel's memory is the floor, the memory available the ceiling, the budget between."""
    from cnncli.api.sources import load
    from cnncli.engine import memory
    from cnncli.engine.model_input import open_for_images
    from cnncli.engine.targets import by_layer

    m = open_for_images(load(str(MINI)), None, None)
    t = by_layer(m.graph, 5).tensor
    row = memory.reverse_row_bytes(m.graph, m.input_name, t)
    assert row > 4 * 3 * 112 * 112  # at least the input and every step's tensor
    batch = lambda *a, **k: memory.reverse_batch(m.graph, m.input_name, t, *a, **k)  # noqa: E731
    assert batch(128, budget=10 * row) == 10
    assert batch(128, budget=1) == 1  # the floor
    assert batch(3, budget=10**12) == 3  # never more rows than channels
    assert batch(1000, budget=10**12) == memory.MAX_REVERSE_BATCH
    fixed = memory.run_estimate(m.graph, m.input_name, t, 1, 1)
    assert batch(128, limit=fixed + 4 * row, budget=10**12) == 5  # the ceiling: what is there
    monkeypatch.setattr(memory, "available_memory", lambda: fixed + 2 * row)
    assert batch(128, budget=10**12) == 3
    from cnncli.api.project import ProjectOptions, prepare

    job = prepare(str(MINI), str(STAR), ProjectOptions(layer=5, channels="all"))
    assert job.projector.max_batch == 3
    job = prepare(str(MINI), str(STAR), ProjectOptions(layer=5, channels="all", batch_size=2))
    assert job.projector.max_batch == 2  # --batch-size given: as given


def test_progress_moves_with_each_small_batch(monkeypatch, tmp_path):
    """--channel all without --batch-size: the reverse runs take the batch the memory estimate
    chose (here 3 rows: the memory available made small), and the progress ticks channel by
    channel as each run's projections are written, not 64 at once."""
    from cnncli.api.project import ProjectOptions, run
    from cnncli.engine import memory
    from cnncli.engine.model_input import open_for_images
    from cnncli.engine.project import Projector
    from cnncli.engine.targets import by_layer
    from cnncli.api.sources import load

    m = open_for_images(load(str(MINI)), None, None)
    t = by_layer(m.graph, 5).tensor
    fixed, row = memory.run_estimate(m.graph, m.input_name, t, 1, 1), memory.reverse_row_bytes(m.graph, m.input_name, t)
    monkeypatch.setattr(memory, "available_memory", lambda: fixed + 2 * row)
    runs, real = [], Projector.run_reverse

    def counted(self, seeds, fwd, paired=False):
        runs.append(len(seeds))
        return real(self, seeds, fwd, paired)

    monkeypatch.setattr(Projector, "run_reverse", counted)
    ticks = []
    res = run(str(MINI), str(STAR), ProjectOptions(layer=5, channels="all", figure=False, out=str(tmp_path)),
              progress=lambda n, total=None: ticks.append((n, total)), arrays=False)
    assert len(res.rows) == 128
    assert runs == [3] * 42 + [2]
    assert ticks[0] == (0, 128) and ticks[1:] == [(1, None)] * 128


def test_top_tiles_take_norm_as_project_does(tmp_path):
    """`cnn top --norm`: percentile by default (as `cnn project`), so a deep layer's projections
    are not faint; --norm grey keeps files of its own beside the default's."""
    args = ["top", MINI, IMAGES, "--layer", 5, "--channel", "108", "-k", 4, "--quiet", "--out", tmp_path,
            "--format", "json"]
    default = json.loads(invoke(*args).stdout)
    grey = json.loads(invoke(*args, "--norm", "grey").stdout)
    a, b = default["channels"][0]["files"]["grid"], grey["channels"][0]["files"]["grid"]
    assert a != b and b.endswith("_norm-grey.png") and Path(a).is_file() and Path(b).is_file()
    assert default["overview"] != grey["overview"] and Path(default["overview"]).is_file()
    def contrast(path) -> float:
        """Mean distance from mid-grey (0) of the projection tiles: the grid's left half, below
        its title, white gaps left out."""
        px = rgb(path)[30:, : rgb(path).shape[1] // 2].astype(float)
        tiles = px[~np.all(px == 255, axis=2)]
        return float(np.abs(tiles - 128).mean())

    assert contrast(a) > 1.5 * contrast(b)
