"""`cnn demo` end to end: the bundled trained network on the bundled photos, into a temp folder."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

from click.testing import CliRunner

from cnncli.cli import cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs: list[str] = []
        self.tables = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.srcs.append(a["src"])
        if tag == "table":
            self.tables += 1
        if tag in ("script", "link"):
            raise AssertionError(f"the gallery should be self-contained, found <{tag}>")


def test_demo_writes_a_gallery_whose_references_all_exist(tmp_path):
    out = tmp_path / "gallery"
    result = CliRunner().invoke(cli, ["demo", "--out", str(out), "--format", "json", "--quiet"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert result.stderr == ""
    index = Path(doc["gallery"])
    assert index == out / "index.html" and index.is_file()
    page = index.read_text(encoding="utf-8")
    parser = _Refs()
    parser.feed(page)
    assert parser.tables >= 3  # stats, connectivity, projections summary
    assert parser.srcs, "the gallery shows no images"
    for src in parser.srcs:
        assert not re.match(r"^[a-z]+://", src) and not src.startswith("/"), src  # opens from disk
        path = out / src
        assert path.is_file(), f"gallery references missing {src}"
        assert path.read_bytes()[:8] == PNG_MAGIC
    # every conv layer of the sample network appears, with 4 projections per image
    layers = doc["layers"]
    assert [r["layer"] for r in layers] == [1, 2, 3, 4, 5]
    assert [r["receptive_field"] for r in layers] == [[7, 7], [27, 27], [75, 75], [107, 107], [139, 139]]
    images = {r["images"] for r in layers}
    assert len(images) == 1 and images.pop() >= 5
    for r in layers:
        assert r["projections"] == 4 * r["images"]
    projections = [s for s in parser.srcs if "_layer" in s]
    assert len(projections) == sum(r["projections"] for r in layers)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["totals"]["convs"] == 5


def test_demo_default_table_names_the_gallery(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["demo", "--quiet"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cnn-demo" / "index.html").is_file()
    assert "index.html" in result.stdout


def test_demo_unwritable_folder_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = CliRunner().invoke(cli, ["demo", "--out", str(blocker / "sub")])
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:") and "Traceback" not in result.output
