"""Ops that read regions of their input: RoiAlign and MaxRoiPool (pooled boxes), Col2Im (blocks
added into an image) and MaxUnpool (values put back at switches).

RoiAlign and MaxRoiPool sample at positions the boxes fix: the rule reads the boxes when it builds
the reverse graph (stored, or computed without the input's values, as other rules read indices;
boxes computed from the input's values are refused) and works out each output bin's taps as
onnxruntime's kernels do (Caffe2's RoiAlign: bilinear samples, averaged or the largest weighted
corner; MaxRoiPool: the largest value in a rounded window). Averaging is linear: the signal is
added back at the taps times their weights. A max goes back to the tap the forward values choose,
found in the reverse graph (ArgMax over the bin's candidates, the first of ties as the kernels
keep it). No op here rectifies: the three modes are the same.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from cnncli.reverse.builder import Builder, shape_of, unsupported
from cnncli.reverse.rules import register
from cnncli.reverse.shape_ops import scatter_along

_NONE = np.float32(-3.4e38)  # a padded candidate's value: never the largest


def _roialign_bins(rois, H, W, ph_, pw_, scale, ratio, half_pixel):
    """Per roi and bin (row-major), the samples' four corners as (flat position, weight), and the
    number of samples the average divides by (onnxruntime's pre_calc_for_bilinear_interpolate, in
    its float32 arithmetic)."""
    f = np.float32
    out = []
    for roi in np.asarray(rois, f):
        off = f(0.5 if half_pixel else 0.0)
        sw, sh, ew, eh = (f(v) * f(scale) - off for v in roi)
        rw, rh = ew - sw, eh - sh
        if not half_pixel:  # malformed boxes forced to 1×1
            rw, rh = max(rw, f(1)), max(rh, f(1))
        bh, bw = rh / f(ph_), rw / f(pw_)
        gh = ratio if ratio > 0 else int(np.ceil(rh / f(ph_)))
        gw = ratio if ratio > 0 else int(np.ceil(rw / f(pw_)))
        count = max(gh * gw, 1)
        for ph in range(ph_):
            for pw in range(pw_):
                taps = []
                for iy in range(gh):
                    yy = sh + f(ph) * bh + f(iy + 0.5) * bh / f(gh)
                    for ix in range(gw):
                        x, y = sw + f(pw) * bw + f(ix + 0.5) * bw / f(gw), yy
                        if y < -1.0 or y > H or x < -1.0 or x > W:  # outside: weights 0
                            taps += [(0, 0.0)] * 4
                            continue
                        y, x = max(y, f(0)), max(x, f(0))
                        yl, xl = int(y), int(x)
                        yl, yh, y = (H - 1, H - 1, f(H - 1)) if yl >= H - 1 else (yl, yl + 1, y)
                        xl, xh, x = (W - 1, W - 1, f(W - 1)) if xl >= W - 1 else (xl, xl + 1, x)
                        ly, lx = y - f(yl), x - f(xl)
                        hy, hx = f(1) - ly, f(1) - lx
                        taps += [(yl * W + xl, hy * hx), (yl * W + xh, hy * lx), (yh * W + xl, ly * hx), (yh * W + xh, ly * lx)]
                out.append((taps, count))
    return out


def _roipool_bins(rois, H, W, ph_, pw_, scale):
    """MaxRoiPool's windows per roi and bin: the positions of each (row-major; empty: none)."""
    def rnd(v):  # std::round: half away from zero
        return int(np.sign(v) * np.floor(abs(v) + 0.5))

    out = []
    for roi in np.asarray(rois, np.float32):
        x1, y1, x2, y2 = (rnd(np.float32(v) * np.float32(scale)) for v in roi[1:5])
        bh, bw = np.float32(max(y2 - y1 + 1, 1)) / np.float32(ph_), np.float32(max(x2 - x1 + 1, 1)) / np.float32(pw_)
        for ph in range(ph_):
            hs, he = (min(max(int(v) + y1, 0), H) for v in (np.floor(ph * bh), np.ceil((ph + 1) * bh)))
            for pw in range(pw_):
                ws, we = (min(max(int(v) + x1, 0), W) for v in (np.floor(pw * bw), np.ceil((pw + 1) * bw)))
                out.append([(h * W + w, 1.0) for h in range(hs, he) for w in range(ws, we)])
    return out


def _roi_layout(b: Builder, node, g: str, xs, n_rois: int, P: int):
    """The signal as [rows, C, rois·P] and the way back to X's layout from [rows, C, N·H·W]: one
    roi of an image of batch 1 keeps the reverse rows; otherwise the output's first axis is the
    rois, and the signal is one tensor shaped as the output (its reverse spans X's batch)."""
    N, C, H, W = xs
    if n_rois == 1 and N == 1:
        return b.op("Reshape", [g, b.ints([-1, C, P])], "R"), (lambda t: b.reshape(t, xs, "roi_T")), True
    G = b.op("Reshape", [b.op("Transpose", [g], "R", perm=[1, 0, 2, 3]), b.ints([1, C, n_rois * P])], "R")
    back = lambda t: b.op("Transpose", [b.op("Reshape", [t, b.ints([C, N, H, W])])], "roi_T", perm=[1, 0, 2, 3])  # noqa: E731
    return G, back, False


def _forward_values(b: Builder, x: str, xs, rows: bool) -> str:
    """X as [batch, C, N·H·W] (rows: its own batch; else one row spanning X's batch)."""
    N, C, H, W = xs
    if rows:
        return b.op("Reshape", [b.fwd(x), b.ints([-1, C, H * W])], "X")
    return b.op("Reshape", [b.op("Transpose", [b.fwd(x)], "X", perm=[1, 0, 2, 3]), b.ints([1, C, N * H * W])], "X")


def _linear_back(b: Builder, G: str, C: int, taps: list, size: int) -> str:
    """The adjoint of an average of taps: taps[i] lists (position, weight) of output element i
    (along the last axis of G [rows, C, bins]); each weight times G[..., i] is added there."""
    src = np.asarray([i for i, t in enumerate(taps) for _ in t], np.int64)
    dst = np.asarray([q for t in taps for q, _ in t], np.int64)
    w = np.asarray([v for t in taps for _, v in t], np.float32)
    taken = b.op("Mul", [b.op("Gather", [G, b.ints(src)], "taken", axis=2), b.const(w, "w")], "weighted")
    return scatter_along(b, taken, [None, C, size], 2, dst)


def _max_back(b: Builder, G: str, X: str, C: int, cands: list, size: int) -> str:
    """Each bin's signal goes to its candidate (position, weight) with the largest weight·X."""
    bins, M = len(cands), max(1, max(len(c) for c in cands))
    q = np.zeros((bins, M), np.int64)
    w = np.zeros((bins, M), np.float32)
    ok = np.zeros((bins, M), bool)
    for i, c in enumerate(cands):
        if c:
            q[i, :len(c)], w[i, :len(c)], ok[i, :len(c)] = [t[0] for t in c], [t[1] for t in c], True
    vals = b.op("Reshape", [b.op("Gather", [X, b.ints(q.reshape(-1))], "candidates", axis=2), b.ints([0, 0, bins, M])])
    vals = b.op("Where", [b.const(ok, "real", bool), b.op("Mul", [vals, b.const(w, "w")]), b.const(_NONE)], "weighted")
    am = b.op("ArgMax", [vals], "chosen", axis=3, keepdims=1)
    pick = [b.op("GatherElements", [b.op("Expand", [b.const(t, "cand", t.dtype), b.op("Shape", [vals])]), am], "pick", axis=3)
            for t in (q, w)]
    q_sel, w_sel = (b.op("Squeeze", [t, b.ints([3])]) for t in pick)
    contrib = b.op("Mul", [G, w_sel], "to_switch")
    at = b.op("Expand", [q_sel, b.op("Shape", [contrib])], "at")
    return b.op("ScatterElements", [b.zeros_like_batch(contrib, [None, C, size]), at, contrib], "unpool", axis=2, reduction="add")


def _boxes(b: Builder, node, slot: int) -> np.ndarray:
    v = b.value(node.input[slot]) if len(node.input) > slot else None
    if v is None:
        raise unsupported(node, "with boxes that could not be computed is not supported")
    return np.asarray(v)


@register("RoiAlign", values=(1, 2))
def _roi_align(b: Builder, node, a, grads) -> dict:
    x = node.input[0]
    xs, ys = shape_of(b, x), shape_of(b, node.output[0])
    rois, batch = _boxes(b, node, 1), _boxes(b, node, 2).reshape(-1).astype(np.int64)
    N, C, H, W = xs
    ph, pw = ys[2:]
    opset = next((o.version for o in b.graph.model.opset_import if o.domain in ("", "ai.onnx")), 17)
    # (RoiAlign-10 has no such attribute and samples as output_half_pixel does)
    half = a.get("coordinate_transformation_mode", "half_pixel" if opset >= 16 else "output_half_pixel") == "half_pixel"
    bins = _roialign_bins(rois, H, W, ph, pw, float(a.get("spatial_scale", 1.0)), int(a.get("sampling_ratio", 0)), half)
    P = ph * pw
    shift = np.repeat(batch * H * W, P)  # each roi reads its own image of X's batch
    G, back, rows = _roi_layout(b, node, grads[0], xs, len(rois), P)
    if a.get("mode", "avg") == "avg":
        taps = [[(q + s, w / count) for q, w in t] for (t, count), s in zip(bins, shift)]
        return {x: back(_linear_back(b, G, C, taps, N * H * W))}
    cands = [[(q + s, w) for q, w in t] for (t, _), s in zip(bins, shift)]
    return {x: back(_max_back(b, G, _forward_values(b, x, xs, rows), C, cands, N * H * W))}


@register("MaxRoiPool", values=(1,))
def _max_roi_pool(b: Builder, node, a, grads) -> dict:
    x = node.input[0]
    xs, ys = shape_of(b, x), shape_of(b, node.output[0])
    rois = _boxes(b, node, 1)
    N, C, H, W = xs
    ph, pw = ys[2:]
    bins = _roipool_bins(rois, H, W, ph, pw, float(a.get("spatial_scale", 1.0)))
    shift = np.repeat(rois[:, 0].astype(np.int64) * H * W, ph * pw)
    G, back, rows = _roi_layout(b, node, grads[0], xs, len(rois), ph * pw)
    cands = [[(q + s, w) for q, w in t] for t, s in zip(bins, shift)]
    return {x: back(_max_back(b, G, _forward_values(b, x, xs, rows), C, cands, N * H * W))}


@register("Col2Im", values=(1, 2))
def _col2im(b: Builder, node, a, grads) -> dict:
    """y[c, pos(k, l)] += x[c·B + k, l] for block offset k and block place l: the adjoint takes
    g at each block's positions (nothing where the block lies in the padding)."""
    x = node.input[0]
    xs = shape_of(b, x)
    image, block = (_boxes(b, node, s).reshape(-1).astype(int) for s in (1, 2))
    r = len(image)
    strides, dil = a.get("strides", [1] * r), a.get("dilations", [1] * r)
    pads = a.get("pads", [0] * (2 * r))
    places = [(image[i] + pads[i] + pads[r + i] - dil[i] * (block[i] - 1) - 1) // strides[i] + 1 for i in range(r)]
    if int(np.prod(places)) != xs[2] or xs[1] % int(np.prod(block)):
        raise unsupported(node, "has blocks that do not match its input's shape; not supported")
    k = np.indices(block).reshape(r, -1, 1)
    l = np.indices(places).reshape(r, 1, -1)
    pos = l * np.reshape(strides, (r, 1, 1)) - np.reshape(pads[:r], (r, 1, 1)) + k * np.reshape(dil, (r, 1, 1))
    inside = np.all((pos >= 0) & (pos < np.reshape(image, (r, 1, 1))), axis=0).reshape(-1)
    flat = np.ravel_multi_index(tuple(np.clip(pos[i], 0, image[i] - 1) for i in range(r)), tuple(image)).reshape(-1)
    C = xs[1] // int(np.prod(block))
    g = b.op("Reshape", [grads[0], b.ints([-1, C, int(np.prod(image))])], "image")
    g = b.op("Mul", [b.op("Gather", [g, b.ints(flat)], "blocks", axis=2), b.const(inside.astype(np.float32), "inside")])
    return {x: b.reshape(g, xs, "col_T")}


@register("MaxUnpool")
def _max_unpool(b: Builder, node, a, grads) -> dict:
    """y.flat[I] = x: each x takes the signal at its switch, unless a later x wrote the same
    place (the kernels write in order; that x's value is the one y keeps)."""
    x, ind = node.input[0], node.input[1]
    xs, ys = shape_of(b, x), shape_of(b, node.output[0])
    n_in, n_out = int(np.prod(xs[1:])), int(np.prod(ys[1:]))
    idx = b.op("Reshape", [b.op("Mod", [b.fwd(ind), b.ints(n_out)], "local_idx"), b.ints([-1, n_in])], "idx")
    order = b.ints(np.arange(n_in).reshape(1, n_in))
    order = b.op("Expand", [order, b.op("Shape", [idx])], "order")
    blank = b.op("Cast", [b.op("Sub", [b.zeros_like_batch(idx, [None, n_out]), b.const(1.0)])], "blank", to=TensorProto.INT64)
    owner = b.op("ScatterElements", [blank, idx, order], "owner", axis=1)
    kept = b.float_mask(b.op("Equal", [b.op("GatherElements", [owner, idx], "writer", axis=1), order], "kept"))
    g = b.op("Reshape", [grads[0], b.ints([-1, n_out])], "flat")
    rows = b.op("Shape", [b.zeros_like_batch(g, [None, n_in])], "rows")
    taken = b.op("GatherElements", [g, b.op("Expand", [idx, rows], "idx_rows")], "unpooled_T", axis=1)
    return {x: b.reshape(b.op("Mul", [taken, kept]), xs, "unpool_T")}
