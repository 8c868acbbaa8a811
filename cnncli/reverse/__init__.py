"""The reverse-graph builder, split by op family; see :mod:`cnncli.reverse.builder`.

Importing the package registers every family's rules in :data:`RULES`.
"""

from cnncli.reverse import activations, arithmetic, conv, linear, normalization, pooling, resize, shape_ops  # noqa: F401
from cnncli.reverse import pointwise, reductions, softmax  # noqa: F401
from cnncli.reverse import gather, quantize, tiling  # noqa: F401
from cnncli.reverse import recurrent, scans  # noqa: F401
from cnncli.reverse import functions, scatter, spectral  # noqa: F401
from cnncli.reverse import regions, sampling  # noqa: F401
from cnncli.reverse.activations import RELU_FAMILY
from cnncli.reverse.builder import (
    MODES,
    OPSET,
    OUTPUT,
    SEED,
    Builder,
    ReverseGraph,
    bake_constants,
    build_reverse,
    dynamic_tensors,
    other_input,
    path_nodes,
)
from cnncli.reverse.resize import resize_matrix
from cnncli.reverse.rules import RULES, register

__all__ = [
    "MODES", "OPSET", "OUTPUT", "RELU_FAMILY", "RULES", "SEED", "Builder", "ReverseGraph", "bake_constants",
    "build_reverse", "dynamic_tensors", "other_input", "path_nodes", "register", "resize_matrix",
]
