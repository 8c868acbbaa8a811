"""`cnn report`'s page in a real headless browser (Chromium over the DevTools protocol,
tests/browser.py): opened from disk, every picture loads (lazy ones too, naturalWidth > 0), the
console and the network report no error, a hostile model's names run no script, and a
screenshot 1280 px wide is not blank. Skipped where no Chromium is installed
(Debian/Ubuntu: ``apt-get install chromium``)."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from browser import WIDTH, Browser, find_browser
from cnncli.cli import cli
from cnncli.escaping import visible
from helpers import REPO
from test_report import HOSTILE, Page, hostile_inputs

pytestmark = pytest.mark.skipif(find_browser() is None, reason="no Chromium on PATH (apt-get install chromium, "
                                "or CNNCLI_BROWSER=/path/to/chrome): the page is not checked in a browser")
MINI = REPO / "sample_models" / "zfnet_mini.onnx"
IMAGES = REPO / "sample_models" / "images"


def make_report(model, images, folder, *args):
    r = CliRunner().invoke(cli, ["report", str(model), str(images), "--out", str(folder), "--quiet", *map(str, args)])
    assert r.exit_code == 0, (r.stderr, r.exception)
    return folder / "index.html"


def test_the_page_loads_every_picture_without_an_error(tmp_path):
    page = make_report(MINI, IMAGES, tmp_path / "rep", "--layers", "1,2", "-k", 2, "--channels", 2, "--top", 1,
                       "--per-image", 2)
    expected = len(Page(page.read_text(encoding="utf-8")).imgs)
    with Browser() as b:
        b.open(page)
        assert b.evaluate("document.scripts.length") == 0
        lazy = b.evaluate("[...document.images].filter(i => i.loading === 'lazy').length")
        images = b.load_all_images()
        errors = b.errors()
        shot = b.screenshot(tmp_path / "top.png")
        deep = b.screenshot(tmp_path / "layer.png", "#layer-2-channels")
    assert len(images) == expected and lazy == expected
    broken = [i["src"] for i in images if not i["loaded"] or i["width"] <= 0]
    assert broken == [], broken
    assert errors == [], errors
    for png in (shot, deep):
        with Image.open(png) as im:
            assert im.width == WIDTH
            a = np.asarray(im.convert("RGB"), dtype=np.float64)
        assert a.std() > 10 and len(np.unique(a.reshape(-1, 3), axis=0)) > 50, png  # text, tables, pictures


def test_a_hostile_model_runs_no_script_in_the_page(tmp_path):
    model, images = hostile_inputs(tmp_path)
    page = make_report(model, images, tmp_path / "rep", "--top", 1)
    with Browser() as b:
        b.open(page)
        b.load_all_images()
        assert b.evaluate("document.scripts.length") == 0
        assert b.evaluate("[...document.images].every(i => i.getAttribute('src').startsWith('img/'))")
        assert b.evaluate("document.body.innerText").count("conv" + visible(HOSTILE)) >= 1  # shown as text
        assert b.errors() == []
        assert not [e for e in b.events if e["method"] == "Page.javascriptDialogOpening"]
