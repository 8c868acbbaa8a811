"""`cnn top --engine ray` gives exactly the local engine's entries.

The reference is the local engine (itself checked against a brute-force reference in
test_top.py); the Ray runs split the same few hundred images into blocks of other sizes, over one
or two actors, with unreadable files mixed in. The model (onnx.helper, symbolic batch):

    x [N,3,32,32] → conv1 3x3 (6) → relu → maxpool 2x2/2 → conv2 3x3 pad 1 (5) → relu (r2)

conv2's channel 4 has zero weights and bias 0.5, so every image ties at 0.5 at every position:
its top k are decided by the tie rule alone (earlier image, first position), which a merge that
depended on the block order would get wrong.

One local Ray runtime (2 CPUs) is shared by the module; the merge property test and the CLI
checks need no runtime. Without Ray installed the Ray tests are skipped.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from cnncli.cli import cli
from cnncli.scale.merge import merge
from cnncli.engine.top import TopK
from helpers import init, make_model, vi

from onnx import helper

N_IMAGES = 300
CONST = 4
K = 5
BROKEN = {"a_0007_text.png": b"not an image\n", "a_0150_empty.jpg": b"",
          "b_0299_truncated.png": None}  # None: the first 60 bytes of a real PNG


# ----------------------------------------------------------------------------- merge (no Ray)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_merge_of_blocks_is_the_top_k_of_all_images(data):
    """Any split of the images into blocks, merged in any order and grouping, gives what the
    local engine's single pass (TopK.offer over all images in order) gives; values from a small
    set, so ties are everywhere."""
    n = data.draw(st.integers(1, 40), label="images")
    c = data.draw(st.integers(1, 4), label="channels")
    k = data.draw(st.integers(1, 6), label="k")
    levels = data.draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0]), min_size=n * c, max_size=n * c))
    maxima = np.asarray(levels, dtype=np.float32).reshape(n, c)
    locs = np.arange(n * c * 2).reshape(n, c, 2)
    paths = [f"img{i}.png" for i in range(n)]

    whole = TopK(c, k)
    whole.offer(maxima, locs, np.arange(n), paths)

    cuts = sorted(set(data.draw(st.lists(st.integers(1, max(1, n - 1)), max_size=6))) - {n})
    bounds = [0, *cuts, n]
    blocks = []
    for a, b in zip(bounds, bounds[1:]):
        t = TopK(c, k)
        t.offer(maxima[a:b], locs[a:b], np.arange(a, b), paths[a:b])
        blocks.append(t)
    blocks = data.draw(st.permutations(blocks), label="arrival order")
    while len(blocks) > 1:  # merge a random adjacent pair each time: any grouping
        i = data.draw(st.integers(0, len(blocks) - 2))
        blocks[i:i + 2] = [merge(blocks[i], blocks[i + 1])]
    got = merge(TopK(c, k), blocks[0])
    for row in range(c):
        assert got.entries(row) == whole.entries(row)


# ----------------------------------------------------------------------------- fixtures


def tiny_model(path: Path) -> Path:
    rng = np.random.default_rng(3)
    w2 = rng.normal(0, 0.3, (5, 6, 3, 3))
    b2 = rng.normal(0, 0.1, 5)
    w2[CONST], b2[CONST] = 0.0, 0.5
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], name="conv1", kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "W2", "B2"], ["c2"], name="conv2", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
    ]
    inits = [init("W1", (6, 3, 3, 3), value=rng.normal(0, 0.3, (6, 3, 3, 3))),
             init("B1", (6,), value=rng.normal(0, 0.1, 6)), init("W2", (5, 6, 3, 3), value=w2), init("B2", (5,), value=b2)]
    model = make_model(nodes, [vi("x", ["N", 3, 32, 32])], [vi("r2", None)], inits)
    path.write_bytes(model.SerializeToString())
    return path


def write_images(folder: Path) -> list[Path]:
    """Noise and shapes, 32x32 and a few other sizes and modes; names sort in creation order."""
    rng = np.random.default_rng(11)
    (folder / "sub").mkdir(parents=True)
    paths = []
    for i in range(N_IMAGES):
        h, w = (32, 32) if i % 4 else tuple(int(v) for v in rng.integers(20, 48, 2))
        im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        draw = ImageDraw.Draw(im)
        for _ in range(int(rng.integers(1, 4))):
            y0, x0 = (int(v) for v in rng.integers(0, 24, 2))
            box = [x0, y0, x0 + int(rng.integers(3, 12)), y0 + int(rng.integers(3, 12))]
            fill = tuple(int(v) for v in rng.integers(0, 256, 3))
            (draw.ellipse if i % 2 else draw.rectangle)(box, fill=fill)
        if i % 9 == 4:
            im = im.convert("L")
        sub = i >= N_IMAGES - 50
        p = (folder / "sub" if sub else folder) / f"{'b' if sub else 'a'}_{i:04d}.png"
        im.save(p)
        paths.append(p)
    real = paths[0].read_bytes()
    for name, content in BROKEN.items():
        target = (folder / "sub" / name) if name.startswith("b_") else folder / name
        target.write_bytes(real[:60] if content is None else content)
    return paths


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("top_ray")
    model = tiny_model(base / "tiny.onnx")
    write_images(base / "imgs")
    return base, model


@pytest.fixture(scope="module")
def local(setup):
    base, model = setup
    r = CliRunner().invoke(cli, ["top", str(model), str(base / "imgs"), "--layer", "2", "--channels", "all",
                                 "-k", str(K), "--format", "json", "--out", str(base / "out_local")])
    assert r.exit_code == 0, (r.stderr, r.exception)
    return json.loads(r.stdout), r.stderr


@pytest.fixture(scope="module")
def ray_runtime():
    ray = pytest.importorskip("ray")
    import logging

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield ray
    ray.shutdown()


def entries(doc) -> dict[int, list[dict]]:
    return {ch["channel"]: ch["entries"] for ch in doc["channels"]}


def assert_same_entries(got: dict[int, list], want: dict[int, list]) -> None:
    assert got.keys() == want.keys()
    for c in want:
        assert [e["image"] for e in got[c]] == [e["image"] for e in want[c]], c
        assert [e["location"] for e in got[c]] == [e["location"] for e in want[c]], c
        assert [e["box"] for e in got[c]] == [e["box"] for e in want[c]], c
        np.testing.assert_allclose([e["activation"] for e in got[c]], [e["activation"] for e in want[c]], rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- options and imports


def test_ray_options_need_the_ray_engine(setup):
    base, model = setup
    r = CliRunner().invoke(cli, ["top", str(model), str(base / "imgs"), "--layer", "2", "--workers", "2"])
    assert r.exit_code == 2
    assert "--engine ray" in r.stderr and "Traceback" not in r.stderr


def test_without_ray_a_one_line_error(setup, monkeypatch):
    base, model = setup
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError
    r = CliRunner().invoke(cli, ["top", str(model), str(base / "imgs"), "--layer", "2", "--engine", "ray",
                                 "--out", str(base / "out_noray")])
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    assert lines == ["Error: --engine ray needs Ray: pip install 'cnncli[ray]'"]


def test_help_and_the_local_engine_do_not_import_ray(setup):
    base, model = setup
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from cnncli.cli import cli\n"
        "assert CliRunner().invoke(cli, ['--help']).exit_code == 0\n"
        "assert CliRunner().invoke(cli, ['top', '--help']).exit_code == 0\n"
        f"r = CliRunner().invoke(cli, ['top', {str(model)!r}, {str(base / 'imgs')!r}, '--layer', '2', '-k', '2',\n"
        f"                             '--format', 'json', '--out', {str(base / 'out_imports')!r}])\n"
        "assert r.exit_code == 0, r.stderr\n"
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_decode_reads_uris_as_the_local_reader_reads_paths(setup):
    """A list may name URIs (read through pyarrow's filesystems, as Ray's readers do): file://
    gives the local reader's pixels; an unreadable or missing one is flagged, not fatal."""
    pytest.importorskip("pyarrow")
    from cnncli.imaging.preprocess import read_image
    from cnncli.scale.ray_top import decode_block

    base, _ = setup
    good = sorted((base / "imgs").glob("a_000[0-4].png"))
    names = [p.as_uri() for p in good] + [str(good[0]), (base / "imgs" / "a_0007_text.png").as_uri(),
                                          (base / "imgs" / "gone.png").as_uri()]
    out = decode_block({"id": np.arange(len(names)), "path": np.array(names, dtype=object)}, 3, (32, 32))
    assert out["ok"].tolist() == [True] * 6 + [False, False]
    for i, p in enumerate(good + [good[0]]):
        np.testing.assert_array_equal(out["pixels"][i], read_image(p, 3, (32, 32)))


# ----------------------------------------------------------------------------- Ray against local


def test_local_reference_has_the_ties_and_the_skips(local):
    doc, stderr = local
    assert doc["scanned"] == N_IMAGES and doc["skipped"] == len(BROKEN)
    const = entries(doc)[CONST]
    assert [e["activation"] for e in const] == [0.5] * K
    assert [Path(e["image"]).name for e in const] == [f"a_{i:04d}.png" for i in range(K)]
    assert f"skipped {len(BROKEN)} unreadable" in stderr


def test_ray_one_worker_folder_gives_the_local_entries(setup, local, ray_runtime):
    base, model = setup
    r = CliRunner().invoke(cli, ["top", str(model), str(base / "imgs"), "--layer", "2", "--channels", "all",
                                 "-k", str(K), "--format", "json", "--out", str(base / "out_ray1"),
                                 "--engine", "ray", "--workers", "1"])
    assert r.exit_code == 0, (r.stderr, r.exception)
    doc = json.loads(r.stdout)
    want, want_err = local
    assert (doc["scanned"], doc["skipped"]) == (want["scanned"], want["skipped"])
    assert_same_entries(entries(doc), entries(want))
    warning = [line for line in r.stderr.splitlines() if line.strip()]
    assert warning == [line for line in want_err.splitlines() if line.strip()]  # the skip warning, nothing of Ray's
    assert all(name in r.stderr for name in ("a_0007_text.png", "a_0150_empty.jpg"))
    grids = sorted(p.name for p in (base / "out_ray1").glob("*.png"))
    assert grids == sorted(p.name for p in (base / "out_local").glob("*.png"))


def test_ray_two_workers_stdin_list_small_batches_gives_the_local_entries(setup, local, ray_runtime):
    """Paths on stdin, batch 3 (so other block sizes), two actors; the progress counter sees
    every listed image once."""
    from cnncli.api.top import TopOptions, run as run_top

    base, model = setup
    listed = sorted(str(p) for p in (base / "imgs").rglob("*") if p.is_file())
    ticks = []
    options = TopOptions(layer=2, n_channels="all", k=K, batch_size=3, out=str(base / "out_ray2"), engine="ray",
                         workers=2)
    report = run_top(str(model), "-", options, stdin=io.StringIO("\n".join(listed) + "\n"), progress=ticks.append)
    want, _ = local
    got = {row.channel: [vars(e) for e in row.entries] for row in report.rows}
    assert_same_entries(got, entries(want))
    assert report.meta["scanned"] == N_IMAGES and len(report.skipped) == len(BROKEN)
    assert sorted(Path(p).name for p in report.skipped) == sorted(BROKEN)
    assert sum(ticks) == len(listed)
