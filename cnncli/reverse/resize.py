"""Resize and Upsample: each spatial axis's interpolation matrix, transposed (every mode: nearest,
linear, cubic, each coordinate transformation, antialias)."""

from __future__ import annotations

import numpy as np

from cnncli.errors import UnsupportedError
from cnncli.reverse.builder import Builder, shape_of, unsupported
from cnncli.reverse.rules import register


@register("Resize", "Upsample", values=(1, 2, 3))
def _resize(b: Builder, node, a, grads) -> dict:
    x = node.input[0]
    xs, ys = shape_of(b, x), shape_of(b, node.output[0])
    mode = a.get("mode", "nearest")
    # Upsample and Resize-10 (inputs X, scales): asymmetric coordinates, and ORT's old nearest
    # rule (truncate when upsampling, ceil when downsampling)
    legacy = node.op_type == "Upsample" or len(node.input) == 2
    if legacy:
        ctm, nearest = "asymmetric", None
    else:
        ctm = a.get("coordinate_transformation_mode", "half_pixel")
        nearest = a.get("nearest_mode", "round_prefer_floor")
    if mode not in ("nearest", "linear", "bilinear", "cubic"):
        raise unsupported(node, f"with mode '{mode}' is not supported")
    if xs[:2] != ys[:2]:
        raise unsupported(node, "resizing the batch or channel axis is not supported")
    scales = _resize_scales(b, node, a, len(xs), legacy)
    if scales is None and a.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        scales = _kept_aspect_scales(b, node, a, xs)
    # cubic, antialias and crop-and-resize: onnxruntime's own 1-D weights, read off by resizing
    # an identity; the other modes: the ONNX formulas (resize_matrix)
    probe = mode == "cubic" or ctm == "tf_crop_and_resize" or (int(a.get("antialias", 0)) and mode != "nearest")
    roi = _resize_roi(b, node, a, len(xs)) if ctm == "tf_crop_and_resize" else None
    g = grads[0]
    r = len(xs)
    for axis in range(2, r):
        if xs[axis] == ys[axis] and (roi is None or (roi[axis], roi[r + axis]) == (0.0, 1.0)):
            continue  # onnxruntime copies an axis whose size does not change, whatever its scale
        scale = scales[axis] if scales is not None else None
        near = nearest or ("floor" if (scale or ys[axis] / xs[axis]) >= 1 else "ceil")
        if probe:
            m = _probe_matrix(b, node, xs[axis], ys[axis], scale, None if roi is None else (roi[axis], roi[len(xs) + axis]))
        else:
            m = resize_matrix(xs[axis], ys[axis], mode, ctm, near, scale)  # [out, in]
        perm = list(range(r))
        perm[axis], perm[-1] = perm[-1], perm[axis]
        g = b.op("Transpose", [g], "T", perm=perm) if axis != r - 1 else g
        g = b.op("MatMul", [g, b.const(m, "resize_m")], "resize_T")
        g = b.op("Transpose", [g], "T", perm=perm) if axis != r - 1 else g
    return {x: g}


def _resize_scales(b: Builder, node, a, rank: int, legacy: bool) -> list[float] | None:
    """The per-axis scales the node was given (the coordinate transform divides by these, not by
    out/in: 5 × 1.5 gives 7 outputs sampled at a step of 1/1.5), or None when it gives sizes."""
    if "scales" in a:  # Upsample-7
        values = a["scales"]
    else:
        slot = 1 if legacy else 2
        name = node.input[slot] if len(node.input) > slot else ""
        v = b.value(name)
        if v is None or np.asarray(v).size == 0:  # sizes given (or scales unknown until run time)
            return None
        values = [float(s) for s in np.asarray(v, dtype=np.float32).reshape(-1)]
    values = [float(np.float32(s)) for s in values]  # onnxruntime reads them as float32
    axes = a.get("axes")
    if axes is not None:  # opset 18: scales for the listed axes only
        full = [1.0] * rank
        for ax, s in zip(axes, values):
            full[ax % rank] = s
        values = full
    return values if len(values) == rank else None


def _kept_aspect_scales(b: Builder, node, a, xs) -> list[float]:
    """keep_aspect_ratio_policy not_larger / not_smaller: one scale for the listed axes, the
    smallest / largest of sizes/input (the output is that scale times the input, rounded)."""
    v = b.value(node.input[3]) if len(node.input) > 3 else None
    if v is None:
        raise unsupported(node, "with sizes that could not be computed is not supported")
    r = len(xs)
    axes = [ax % r for ax in a.get("axes", range(r))]
    ratios = [float(n) / xs[ax] for n, ax in zip(v.reshape(-1), axes)]
    s = min(ratios) if a["keep_aspect_ratio_policy"] == "not_larger" else max(ratios)
    return [s if ax in axes else 1.0 for ax in range(r)]


def _resize_roi(b: Builder, node, a, rank: int) -> list[float]:
    """tf_crop_and_resize's region: starts then ends, per axis (opset 18: for the listed axes)."""
    v = b.value(node.input[1]) if len(node.input) > 1 else None
    if v is None or v.size == 0:
        raise unsupported(node, "in tf_crop_and_resize mode without a known roi is not supported")
    values = [float(r) for r in v.reshape(-1)]
    axes = [ax % rank for ax in a.get("axes", range(rank))]
    full = [0.0] * rank + [1.0] * rank
    for i, ax in enumerate(axes):
        full[ax], full[rank + ax] = values[i], values[len(axes) + i]
    return full


def _probe_matrix(b: Builder, node, n_in: int, n_out: int, scale: float | None, roi) -> np.ndarray:
    """The [n_out, n_in] matrix onnxruntime's Resize applies along one axis, with the node's own
    attributes: an identity [1, 1, n_in, n_in] resized along its third axis (the fourth kept)."""
    from onnx import TensorProto, helper, numpy_helper

    from cnncli.runtime.sessions import make_session

    keep = {at.name: helper.get_attribute_value(at) for at in node.attribute
            if at.name not in ("axes", "keep_aspect_ratio_policy", "extrapolation_value")}
    inits = [numpy_helper.from_array(np.asarray([0, 0, roi[0], 0, 1, 1, roi[1], 1] if roi else [], np.float32), "roi")]
    if scale is not None:
        inits.append(numpy_helper.from_array(np.asarray([1, 1, scale, 1], np.float32), "scales"))
        ins = ["x", "roi", "scales"]
    else:
        inits.append(numpy_helper.from_array(np.asarray([1, 1, n_out, n_in], np.int64), "sizes"))
        ins = ["x", "roi", "", "sizes"]
    one = helper.make_node("Resize", ins, ["y"], extrapolation_value=0.0, **keep)
    graph = helper.make_graph([one], "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, n_in, n_in])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    x = np.eye(n_in, dtype=np.float32).reshape(1, 1, n_in, n_in)
    y = make_session(model.SerializeToString(), "cpu", spin=False).run(["y"], {"x": x})[0]
    if y.shape != (1, 1, n_out, n_in):
        raise unsupported(node, f"gives {y.shape[2]} rows where the analysis expects {n_out}; not supported")
    return y[0, 0].astype(np.float32)


def resize_matrix(n_in: int, n_out: int, mode: str, ctm: str, nearest_mode: str, scale: float | None = None) -> np.ndarray:
    """The [n_out, n_in] matrix of a 1-D ONNX Resize; ``scale`` is the given scale (default n_out / n_in)."""
    scale = n_out / n_in if scale is None else scale
    o = np.arange(n_out, dtype=np.float64)
    if ctm == "half_pixel":
        src = (o + 0.5) / scale - 0.5
    elif ctm == "pytorch_half_pixel":
        src = (o + 0.5) / scale - 0.5 if n_out > 1 else np.zeros_like(o)
    elif ctm == "align_corners":
        src = o * (n_in - 1) / (n_out - 1) if n_out > 1 else np.zeros_like(o)
    elif ctm == "asymmetric":
        src = o / scale
    elif ctm == "half_pixel_symmetric":
        adj = n_out / (scale * n_in)
        center = n_in / 2
        offset = center * (1 - adj)
        src = offset + (o + 0.5) / scale - 0.5
    elif ctm == "tf_half_pixel_for_nn":
        src = (o + 0.5) / scale
    else:
        raise UnsupportedError(f"Resize coordinate_transformation_mode '{ctm}' is not supported")
    m = np.zeros((n_out, n_in), dtype=np.float64)
    if mode == "nearest":
        if nearest_mode == "floor":
            idx = np.floor(src)
        elif nearest_mode == "ceil":
            idx = np.ceil(src)
        elif nearest_mode == "round_prefer_ceil":
            idx = np.floor(src + 0.5)
        else:  # round_prefer_floor
            idx = np.ceil(src - 0.5)
        idx = np.clip(idx, 0, n_in - 1).astype(int)
        m[np.arange(n_out), idx] = 1.0
    else:
        src = np.clip(src, 0, n_in - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        frac = src - lo
        np.add.at(m, (np.arange(n_out), lo), 1 - frac)
        np.add.at(m, (np.arange(n_out), hi), frac)
    return m.astype(np.float32)
