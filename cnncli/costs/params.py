"""Which one-element constants are learned: a layer's learnable scale or bias (hgnetv2's
``LearnableAffineBlock``: ``scale * x + bias`` with two one-element parameters) against a literal
the exporter wrote (GELU's 0.5, a normalisation constant). README ("What the numbers mean") states
the rule."""

from __future__ import annotations

import math
import re

from cnncli.frontend.graph import Graph

# a module path as torch's state_dict keys spell it: identifiers joined by dots
_MODULE_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*\Z")
# the names exporters give the literals they lift into initializers: the dynamo exporter's val_12
# and min_val_cast, torch.export's lifted tensors, tf2onnx's const_fold_opt__7
_LITERAL = re.compile(
    r"(_?val_\d+|(c_)?lifted_tensor_\d+|_tensor_constant\d+|scalar_tensor_default(_\d+)?|.*_cast|const_fold_opt.*"
    r"|const_\w*|.*Constant.*)\Z"
)


def looks_learned(name: str) -> bool:
    """A name a module's parameter has: a dotted path of identifiers that is not an exporter's
    literal name (TorchScript's ``onnx::Mul_12`` and ``/blk/Constant_output_0`` are not paths)."""
    return bool(_MODULE_PATH.match(name)) and not _LITERAL.match(name)


def learned_scalars(graph: Graph) -> frozenset[str]:
    """The model's one-element initializers named as parameters (Constant nodes and folded values
    are never among them: exporters write literals there). The scale onnxruntime's quantizer
    writes beside a quantized weight (``w_scale`` next to ``w_quantized``) is configuration."""
    names = {t.name for t in graph.model.graph.initializer}
    return frozenset(
        t.name for t in graph.model.graph.initializer
        if math.prod(t.dims) == 1 and looks_learned(t.name)
        and not (t.name.endswith("_scale") and t.name[:-len("_scale")] + "_quantized" in names)
    )
