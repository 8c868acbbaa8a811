"""`cnn top`: the k strongest activations per channel over a folder of images, each projected alone
and cropped to its receptive field.

The model is a tiny random-weight graph built here (symbolic batch, so batching is exercised):

    x [N,3,32,32] → conv1 5x5 s1 (8) → relu1 (r1) → pool1 2x2/2 → conv2 3x3 pad 1 (6) → relu2 (r2)

conv2's channel 5 has zero weights and bias 0.5: its map is 0.5 everywhere on every image, so its
top k are decided by the tie rules alone (earlier image first, first position in the map).

Expectations are computed independently: each image preprocessed with Pillow and numpy, the target
tensor read from a plain onnxruntime session, per-channel maxima sorted by hand; receptive fields
worked out by hand for this geometry.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from cnncli.cli import cli
from helpers import assert_one_line_error

H = W = 32
CONST_CHANNEL = 5  # conv2 channel with zero weights and bias 0.5


# ----------------------------------------------------------------------------- model and images


def _f32(name, arr) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name)


def tiny_top_model(outputs=("r2",), seed: int = 0, batch="N") -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w2 = rng.normal(0, 0.3, (6, 8, 3, 3))
    b2 = rng.normal(0, 0.1, 6)
    w2[CONST_CHANNEL], b2[CONST_CHANNEL] = 0.0, 0.5
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], name="conv1", kernel_shape=[5, 5]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "W2", "B2"], ["c2"], name="conv2", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
    ]
    inits = [
        _f32("W1", rng.normal(0, 0.2, (8, 3, 5, 5))),
        _f32("B1", rng.normal(0, 0.1, 8)),
        _f32("W2", w2),
        _f32("B2", b2),
    ]
    graph = helper.make_graph(
        nodes, "tiny_top", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, H, W])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="cnncli-tests")
    model.ir_version = 8
    return model


def write_images(folder: Path, n: int, seed: int) -> list[Path]:
    """``n`` random images of varied sizes and modes; the last few in a subfolder. Names are chosen
    so that creation order is the sorted (path) order."""
    rng = np.random.default_rng(seed)
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        h, w = (int(v) for v in rng.integers(12, 70, 2))
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        # some smooth structure so maxima differ from image to image
        yy, xx = np.mgrid[0:h, 0:w]
        pixels = np.clip(pixels * 0.5 + 120 * np.sin(yy / (2 + i % 5))[:, :, None] * rng.normal(size=3), 0, 255).astype(np.uint8)
        im = Image.fromarray(pixels)
        if i % 7 == 3:
            im = im.convert("L")
        elif i % 7 == 5:
            im = im.convert("RGBA")
        in_sub = i >= n - 6
        ext = "jpg" if i % 3 == 0 and im.mode != "RGBA" else "png"
        p = (folder / "sub" if in_sub else folder) / f"{'b' if in_sub else 'a'}_{i:02d}.{ext}"
        im.save(p)
        paths.append(p)
    return paths


def preprocess(path) -> np.ndarray:
    """The 'unit' preset by hand: RGB, bilinear resize to 32x32, /255 → float32 [1, 3, H, W]."""
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB").resize((W, H), Image.Resampling.BILINEAR), dtype=np.uint8)
    return np.ascontiguousarray((arr.astype(np.float32) / np.float32(255)).transpose(2, 0, 1)[None])


def raw_pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((W, H), Image.Resampling.BILINEAR), dtype=np.uint8)


class Reference:
    """The target activations of each image, from a plain onnxruntime session."""

    def __init__(self, model_path: Path):
        self.session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        self.cache: dict[tuple[str, str], np.ndarray] = {}

    def act(self, path, tensor: str) -> np.ndarray:
        key = (str(path), tensor)
        if key not in self.cache:
            self.cache[key] = self.session.run([tensor], {"x": preprocess(path)})[0][0]
        return self.cache[key]

    def top(self, paths, tensor: str, k: int, channels) -> dict[int, list[tuple[str, float, list[int]]]]:
        """Brute force: per channel, each image's spatial max (first argmax), sorted by value
        descending then by position in ``paths``; the first k."""
        out = {}
        for c in channels:
            cand = []
            for order, p in enumerate(paths):
                plane = self.act(p, tensor)[c]
                flat = int(np.argmax(plane))
                cand.append((-float(plane.flat[flat]), order, str(p), [int(v) for v in np.unravel_index(flat, plane.shape)]))
            cand.sort(key=lambda t: (t[0], t[1]))
            out[c] = [(p, -v, loc) for v, _, p, loc in cand[:k]]
        return out


def hand_box(layer: int, loc) -> list[int]:
    """Receptive field by hand, clipped to the 32x32 input, as [y0, x0, y1, x1).

    layer 1 (r1): conv 5x5 s1 → size 5, jump 1, start 0.
    layer 2 (r2): + pool 2/2 → size 5+1·1 = 6, jump 2; + conv 3x3 pad 1 → size 6+2·2 = 10,
    jump 2, start 0 − 1·2 = −2.
    """
    size, jump, start = (5, 1, 0) if layer == 1 else (10, 2, -2)
    (y, x) = loc
    y0, x0 = start + y * jump, start + x * jump
    return [max(y0, 0), max(x0, 0), min(y0 + size, H), min(x0 + size, W)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("top")
    model = d / "tiny.onnx"
    onnx.save(tiny_top_model(), str(model))
    ref_model = d / "tiny_ref.onnx"
    onnx.save(tiny_top_model(outputs=("r1", "r2")), str(ref_model))
    images = d / "imgs"
    paths = write_images(images, 25, seed=1)
    return {"dir": d, "model": str(model), "images": images, "paths": paths, "ref": Reference(ref_model)}


def run_top(*args, input=None):
    return CliRunner().invoke(cli, ["top", *map(str, args)], input=input)


def top_json(setup, images, *extra, out=None, input=None):
    out = out or setup["dir"] / "out"
    r = run_top(setup["model"], images, "--format", "json", "--preset", "unit", "--out", out, "--quiet", *extra, input=input)
    assert r.exit_code == 0, (r.stderr, r.exception)
    return json.loads(r.stdout), r


def entries(doc) -> dict[int, list[tuple[str, float, list[int]]]]:
    return {row["channel"]: [(e["image"], e["activation"], e["location"]) for e in row["entries"]] for row in doc["channels"]}


def assert_same_top(got, expected):
    assert sorted(got) == sorted(expected)
    for c in expected:
        assert [e[0] for e in got[c]] == [e[0] for e in expected[c]], f"channel {c}: images differ"
        np.testing.assert_allclose([e[1] for e in got[c]], [e[1] for e in expected[c]], rtol=1e-5, atol=1e-7,
                                   err_msg=f"channel {c}")
        assert [e[2] for e in got[c]] == [e[2] for e in expected[c]], f"channel {c}: locations differ"


# ----------------------------------------------------------------------------- the top k


@pytest.mark.parametrize("layer,tensor", [(2, "r2"), (1, "r1")])
def test_top_equals_brute_force(setup, layer, tensor):
    doc, r = top_json(setup, setup["images"], "--layer", layer, "--channel", "all", "-k", 3, "--batch-size", 4)
    n_channels = 6 if layer == 2 else 8
    assert doc["tensor"] == tensor and doc["k"] == 3 and doc["layer"] == layer
    assert doc["scanned"] == 25 and doc["skipped"] == 0
    assert [row["channel"] for row in doc["channels"]] == list(range(n_channels))
    expected = setup["ref"].top(setup["paths"], tensor, 3, range(n_channels))
    assert_same_top(entries(doc), expected)
    for row in doc["channels"]:
        assert row["best"] == pytest.approx(row["entries"][0]["activation"])
        for e in row["entries"]:
            assert e["box"] == hand_box(layer, e["location"])
    assert doc["receptive_field"] == ([10, 10] if layer == 2 else [5, 5])


def test_ties_go_to_the_earlier_image_once_each(setup):
    """Channel 5 is 0.5 everywhere: its top 4 are the first 4 images, each once, at [0, 0]."""
    doc, _ = top_json(setup, setup["images"], "--layer", 2, "--channel", CONST_CHANNEL, "-k", 4, "--batch-size", 3)
    (row,) = doc["channels"]
    assert [e["image"] for e in row["entries"]] == [str(p) for p in setup["paths"][:4]]
    assert all(e["activation"] == pytest.approx(0.5) and e["location"] == [0, 0] for e in row["entries"])


def test_k_larger_than_the_image_count(setup, tmp_path):
    folder = tmp_path / "few"
    paths = write_images(folder, 2, seed=9)[:2]
    doc, _ = top_json(setup, folder, "--layer", 2, "--channel", "0,3", "-k", 5, out=tmp_path / "o")
    expected = setup["ref"].top(sorted(paths), "r2", 5, [0, 3])
    assert_same_top(entries(doc), expected)
    assert all(len(row["entries"]) == 2 for row in doc["channels"])


@pytest.fixture(scope="module")
def base(setup):
    """The folder, all channels of layer 2, k 3, batches of 4."""
    return top_json(setup, setup["images"], "--layer", 2, "--channel", "all", "-k", 3, "--batch-size", 4,
                    out=setup["dir"] / "base")[0]


@pytest.mark.parametrize("batch", [1, 7, 25, 64])
def test_batch_size_does_not_change_the_result(setup, base, batch):
    doc, _ = top_json(setup, setup["images"], "--layer", 2, "--channel", "all", "-k", 3, "--batch-size", batch)
    assert_same_top(entries(doc), entries(base))
    assert [[e["box"] for e in row["entries"]] for row in doc["channels"]] == \
        [[e["box"] for e in row["entries"]] for row in base["channels"]]


def test_fixed_batch_model_runs_one_image_at_a_time(setup, base, tmp_path):
    """A model whose batch dim is fixed at 1 cannot take batches: --batch-size is then ignored."""
    fixed = tmp_path / "fixed.onnx"
    onnx.save(tiny_top_model(batch=1), str(fixed))
    r = run_top(fixed, setup["images"], "--layer", 2, "--channel", "all", "-k", 3, "--batch-size", 4, "--format", "json",
                "--preset", "unit", "--quiet", "--out", tmp_path / "o")
    assert r.exit_code == 0, r.stderr
    assert_same_top(entries(json.loads(r.stdout)), entries(base))


def test_glob_text_file_and_stdin_give_the_folder_result(setup, base):
    common = ("--layer", 2, "--channel", "all", "-k", 3, "--batch-size", 4)
    listing = "\n".join(str(p) for p in setup["paths"]) + "\n"

    by_glob, _ = top_json(setup, f"{setup['images']}/**/*.*", *common)
    assert_same_top(entries(by_glob), entries(base))

    text = setup["dir"] / "list.txt"
    text.write_text(listing)
    by_file, _ = top_json(setup, text, *common)
    assert_same_top(entries(by_file), entries(base))

    by_stdin, _ = top_json(setup, "-", *common, input=listing)
    assert_same_top(entries(by_stdin), entries(base))
    assert by_stdin["scanned"] == by_file["scanned"] == by_glob["scanned"] == 25


def test_model_from_stdin(setup, base, tmp_path):
    """MODEL '-' reads the model from standard input; its files are named 'stdin_<images>_…'."""
    r = run_top("-", setup["images"], "--layer", 2, "--channel", "all", "-k", 3, "--batch-size", 4, "--format", "json",
                "--preset", "unit", "--quiet", "--out", tmp_path, input=Path(setup["model"]).read_bytes())
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert_same_top(entries(doc), entries(base))
    names = sorted(p.name for p in tmp_path.iterdir())  # the images' part ends in a hash of which they are
    assert [re.sub(r"-[0-9a-f]{8}", "-H", n) for n in names] == sorted(
        [f"stdin_imgs-H_layer2_c{c}_top3_deconvnet.png" for c in range(6)] + ["stdin_imgs-H_layer2_top3_deconvnet_overview-H.png"])


def test_model_and_images_both_from_stdin(setup, tmp_path):
    r = run_top("-", "-", "--layer", 2, "--out", tmp_path / "o", input=Path(setup["model"]).read_bytes())
    msg = assert_one_line_error(r, 2)
    assert "IMAGES" in msg


def test_a_glob_narrows_the_images(setup):
    """Only the subfolder's images: the brute force over those alone."""
    doc, _ = top_json(setup, f"{setup['images']}/sub/*.png", "--layer", 2, "--channel", "1,2", "-k", 2)
    chosen = [p for p in setup["paths"] if p.parent.name == "sub" and p.suffix == ".png"]
    assert doc["scanned"] == len(chosen)
    assert_same_top(entries(doc), setup["ref"].top(chosen, "r2", 2, [1, 2]))


@pytest.mark.parametrize("batch", [1, 3])
def test_unreadable_image_is_skipped_counted_and_named(setup, tmp_path, batch):
    folder = tmp_path / "mixed"
    good = write_images(folder, 6, seed=4)
    bad = folder / "a_000_broken.jpg"  # sorts first: the first batch holds it
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())
    r = run_top(setup["model"], folder, "--layer", 2, "--channel", "all", "-k", 2, "--format", "json",
                "--preset", "unit", "--batch-size", batch, "--out", tmp_path / "o")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["skipped"] == 1 and doc["scanned"] == 6
    warning = [line for line in r.stderr.splitlines() if "Warning" in line]
    assert len(warning) == 1 and "a_000_broken.jpg" in warning[0] and "skipped 1 " in warning[0], r.stderr
    assert_same_top(entries(doc), setup["ref"].top(sorted(good), "r2", 2, range(6)))


def test_a_single_image_file(setup, tmp_path):
    one = setup["paths"][4]
    doc, _ = top_json(setup, one, "--layer", 2, "--channel", "all", "-k", 3, out=tmp_path)
    assert doc["scanned"] == 1
    assert_same_top(entries(doc), setup["ref"].top([one], "r2", 3, range(6)))


def test_text_file_naming_a_missing_image_skips_it(setup, tmp_path):
    listing = tmp_path / "list.txt"
    missing = tmp_path / "gone.png"
    listing.write_text(f"{setup['paths'][0]}\n{missing}\n{setup['paths'][1]}\n")
    r = run_top(setup["model"], listing, "--layer", 2, "--channel", "0", "-k", 2, "--format", "json",
                "--preset", "unit", "--out", tmp_path / "o")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (doc["scanned"], doc["skipped"]) == (2, 1)
    assert "gone.png" in r.stderr


def test_random_channels_are_seeded(setup):
    common = ("--layer", 2, "-k", 2, "--channels", 2)
    a, _ = top_json(setup, setup["images"], *common, "--seed", 5)
    b, _ = top_json(setup, setup["images"], *common, "--seed", 5)
    chosen = [row["channel"] for row in a["channels"]]
    assert chosen == [row["channel"] for row in b["channels"]]
    assert len(chosen) == 2 and len(set(chosen)) == 2 and all(0 <= c < 6 for c in chosen)
    assert_same_top(entries(a), setup["ref"].top(setup["paths"], "r2", 2, chosen))
    # other seeds pick other pairs (the choice depends on the seed)
    from cnncli.api.top import choose_channels

    picks = {tuple(choose_channels(None, "2", s, 6)) for s in range(12)}
    assert len(picks) > 1 and tuple(chosen) in picks


def test_channel_count_defaults_and_all(setup):
    """--channels defaults to 16, more than this layer has: all 6. --channels all and --channels 6 too."""
    for extra in ((), ("--channels", "all"), ("--channels", 6), ("--channels", 60)):
        doc, _ = top_json(setup, setup["images"], "--layer", 2, "-k", 1, *extra)
        assert [row["channel"] for row in doc["channels"]] == list(range(6)), extra


# ----------------------------------------------------------------------------- files


def test_grid_and_overview_pngs(setup, tmp_path):
    out = tmp_path / "pngs"
    doc, _ = top_json(setup, setup["images"], "--layer", 2, "--channel", "0,4", "-k", 3, out=out)
    grids = [Path(row["files"]["grid"]) for row in doc["channels"]]
    overview = Path(doc["overview"])
    assert len(set(grids)) == 2
    for p in [*grids, overview]:
        assert p.is_file() and p.parent == out
        with Image.open(p) as im:
            im.verify()
        with Image.open(p) as im:
            assert im.format == "PNG" and im.width > 0 and im.height > 0
    assert sorted(out.iterdir()) == sorted([*grids, overview])  # no temporary files left
    with Image.open(grids[0]) as g:
        assert g.width > g.height  # projections beside patches


def test_table_output_names_the_images(setup, tmp_path):
    r = run_top(setup["model"], setup["images"], "--layer", 2, "--channel", "1", "-k", 2, "--preset", "unit",
                "--out", tmp_path / "o", "--quiet")
    assert r.exit_code == 0, r.stderr
    expected = setup["ref"].top(setup["paths"], "r2", 2, [1])[1]
    for path, _, _ in expected:
        assert Path(path).name in r.stdout


# ----------------------------------------------------------------------------- crops and projections (library)


def test_crops_and_projections(setup, tmp_path, monkeypatch):
    """Each kept unit is projected alone on its own image (= Projector.project_units on that image,
    = keep 'max' on that channel), and the tiles are the receptive-field crops before scaling."""
    import cnncli.imaging.pictures
    from cnncli.imaging.pictures import to_display
    from cnncli.engine.model_input import open_for_images
    from cnncli.frontend.load import load_model
    from cnncli.engine.project import Projector
    from cnncli.api.top import TopOptions, run as lib_run_top

    grids, projections = [], []
    real_grid, real_units = cnncli.imaging.pictures.grid, Projector.project_units

    def spy_grid(tiles, cols, tile, *a, **kw):
        grids.append([np.array(t) for t in tiles])
        return real_grid(tiles, cols, tile, *a, **kw)

    def spy_units(self, x, units):
        res = real_units(self, x, units)
        projections.extend((x[i:i + 1].copy(), units[i], res[i].copy()) for i in range(len(units)))
        return res

    import cnncli.runtime.sessions

    batches, unit_calls = [], []
    real_session = cnncli.runtime.sessions.make_session

    class SpySession:  # the scan's forward session: which batch sizes it runs
        def __init__(self, inner):
            self.inner = inner

        def run(self, names, feeds):
            batches.append(feeds["x"].shape[0])
            return self.inner.run(names, feeds)

    def spy_units_count(self, x, units):
        unit_calls.append(len(units))
        return spy_units(self, x, units)

    monkeypatch.setattr(cnncli.imaging.pictures, "grid", spy_grid)
    monkeypatch.setattr(Projector, "project_units", spy_units_count)
    monkeypatch.setattr(cnncli.runtime.sessions, "make_session", lambda *a, **kw: SpySession(real_session(*a, **kw)))
    ticks = []
    options = TopOptions(layer=2, channels="0,2,3", k=4, batch_size=3, preset="unit", out=str(tmp_path / "o"))
    report = lib_run_top(setup["model"], str(setup["images"]), options, progress=ticks.append)
    monkeypatch.undo()
    assert sum(ticks) == 25
    assert batches == [3] * 8 + [1]  # forward passes in batches of --batch-size
    assert unit_calls == [3, 1] * 3  # each channel's 4 kept units, projected in batches too

    assert len(grids) == 2 * 3  # projections and patches per channel (the overview packs their pictures)
    kept = [(row.channel, e) for row in report.rows for e in row.entries]
    assert len(kept) == len(projections) == 12
    m = open_for_images(load_model(setup["model"]))
    projector = Projector(m.model, m.graph, "x", "r2", "deconvnet", "cpu")
    for i, (c, e) in enumerate(kept):
        x_used, unit, proj = projections[i]
        x = preprocess(e.image)
        np.testing.assert_allclose(x_used, x, atol=1e-6)
        assert unit == (c, tuple(e.location))
        alone = projector.project_units(x, [(c, tuple(e.location))])[0]
        np.testing.assert_allclose(proj, alone, rtol=1e-4, atol=1e-6)
        keep_max = projector.project(x, [c], keep="max")[0]
        assert keep_max.location == e.location and keep_max.max_activation == pytest.approx(e.activation, rel=1e-5)
        np.testing.assert_allclose(keep_max.projection, alone, rtol=1e-4, atol=1e-6)
        assert np.abs(alone).max() > 0 or c == CONST_CHANNEL

        y0, x0, y1, x1 = e.box
        assert e.box == hand_box(2, e.location)
        assert 0 < y1 - y0 <= 10 and 0 < x1 - x0 <= 10
        # a single unit's projection lives inside its receptive field
        outside = np.ones((H, W), bool)
        outside[y0:y1, x0:x1] = False
        assert np.abs(alone[:, outside]).max() == 0
        row_i, j = divmod(i, 4)
        proj_tile, patch_tile = grids[2 * row_i][j], grids[2 * row_i + 1][j]
        assert proj_tile.shape[:2] == patch_tile.shape[:2] == (y1 - y0, x1 - x0)
        np.testing.assert_array_equal(patch_tile, raw_pixels(e.image)[y0:y1, x0:x1])
        expected_tile = to_display(alone[:, y0:y1, x0:x1], options.norm)  # percentile, the default
        assert np.abs(proj_tile.astype(int) - expected_tile.astype(int)).max() <= 1


# ----------------------------------------------------------------------------- TopK


def test_topk_is_bounded_and_exact():
    from cnncli.engine.top import TopK

    rng = np.random.default_rng(3)
    k, n_channels = 4, 5
    top = TopK(n_channels, k)
    all_vals, all_locs, next_id = [], [], 0
    for b in [3, 1, 7, 2, 5, 4, 6, 1, 8]:
        vals = rng.integers(0, 6, (b, n_channels)).astype(np.float32)  # many ties
        locs = rng.integers(0, 9, (b, n_channels, 2))
        ids = np.arange(next_id, next_id + b)
        top.offer(vals, locs, ids, [f"img{i}" for i in ids])
        next_id += b
        all_vals.append(vals)
        all_locs.append(locs)
        assert len(top.paths) <= k * n_channels
        assert top.values.shape == (n_channels, k)
    vals, locs = np.concatenate(all_vals), np.concatenate(all_locs)
    for c in range(n_channels):
        order = sorted(range(next_id), key=lambda i: (-vals[i, c], i))[:k]
        assert top.entries(c) == [(float(vals[i, c]), f"img{i}", [int(v) for v in locs[i, c]]) for i in order]


def test_topk_fewer_images_than_k():
    from cnncli.engine.top import TopK

    top = TopK(2, 5)
    top.offer(np.array([[1.0, -2.0], [3.0, -1.0]]), np.zeros((2, 2, 2), int), np.array([0, 1]), ["a", "b"])
    assert top.entries(0) == [(3.0, "b", [0, 0]), (1.0, "a", [0, 0])]
    assert top.entries(1) == [(-1.0, "b", [0, 0]), (-2.0, "a", [0, 0])]  # negative maxima are kept too


def test_batched():
    from cnncli.engine.top import batched

    assert list(batched(iter(range(7)), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(batched([], 3)) == []


# ----------------------------------------------------------------------------- bad input


def test_missing_path(setup, tmp_path):
    msg = assert_one_line_error(run_top(setup["model"], tmp_path / "nowhere", "--layer", 2, "--out", tmp_path / "o"), 1)
    assert "nowhere" in msg
    assert not (tmp_path / "o").exists()


def test_folder_without_images(setup, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here\n")
    msg = assert_one_line_error(run_top(setup["model"], empty, "--layer", 2, "--out", tmp_path / "o"), 1)
    assert "empty" in msg


def test_only_unreadable_images(setup, tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "x.png").write_bytes(b"not a png")
    msg = assert_one_line_error(run_top(setup["model"], folder, "--layer", 2, "--out", tmp_path / "o"), 1)
    assert "skipped" in msg


@pytest.mark.parametrize(
    "args,word",
    [
        (("--layer", 0), "--layer"),
        (("--layer", 3), "--layer"),
        (("--layer", 2, "--channel", 999), "--channel"),
        (("--layer", 2, "--channel", "1,x"), "--channel"),
        (("--layer", 2, "--channels", 0), "--channels"),
        (("--layer", 2, "--channels", "abc"), "--channels"),
        (("--layer", 2, "--channel", 1, "--channels", 2), "--channels"),
        (("--layer", 2, "-k", 0), "-k"),
        (("--layer", 2, "--batch-size", 0), "--batch-size"),
    ],
)
def test_bad_options_exit_2(setup, tmp_path, args, word):
    msg = assert_one_line_error(run_top(setup["model"], setup["images"], *args, "--out", tmp_path / "o"), 2)
    assert word in msg
    assert not (tmp_path / "o").exists()


def test_unwritable_out(setup, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    msg = assert_one_line_error(run_top(setup["model"], setup["images"], "--layer", 2, "--out", blocker / "o"), 1)
    assert "file" in msg
