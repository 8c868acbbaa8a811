"""The stronger shape inference used when ONNX's leaves a dim unknown: onnxruntime's symbolic
shape inference (``onnxruntime.tools.symbolic_shape_infer``, on sympy).

Imported only when needed: plain ``cnn stats`` on a well-formed model never loads onnxruntime.
"""

from __future__ import annotations

import logging

import onnx

Shape = tuple


def symbolic_shapes(light: onnx.ModelProto) -> dict[str, Shape]:
    """Shapes (int dims, None where still symbolic) of every tensor onnxruntime's symbolic shape
    inference works out for ``light``, a model with fixed input shapes. Empty if it cannot run.

    The class is driven directly rather than through ``infer_shapes``, which writes
    ``sym_shape_infer_temp.onnx`` into the working folder when some shape stays unknown.
    """
    try:
        from onnxruntime.tools import symbolic_shape_infer as ssi_module
    except Exception:  # onnxruntime or sympy missing or broken: keep what ONNX inferred
        return {}
    loggers = [logging.getLogger(ssi_module.__name__), ssi_module.logger] if hasattr(ssi_module, "logger") else [
        logging.getLogger(ssi_module.__name__)
    ]
    saved = [lg.disabled for lg in loggers]
    for lg in loggers:
        lg.disabled = True  # its warnings would go to stderr through logging's last-resort handler
    data = light.SerializeToString()
    if b"location" in data:  # a copy without external data: nothing in it may open a file
        from cnncli.frontend.external import strip_external

        light = onnx.ModelProto.FromString(data)
        strip_external(light)
    try:
        ssi = ssi_module.SymbolicShapeInference(2**31 - 1, True, False, 0)
        ssi._preprocess(light)
        while ssi.run_:
            ssi._infer_impl()
        known = dict(ssi.known_vi_)
    except Exception:  # an op it does not cover, a dim it cannot merge: keep what ONNX inferred
        return {}
    finally:
        for lg, s in zip(loggers, saved):
            lg.disabled = s
    shapes: dict[str, Shape] = {}
    for name, vi in known.items():
        if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
            continue
        shapes[name] = tuple(
            d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else None for d in vi.type.tensor_type.shape.dim
        )
    return shapes
