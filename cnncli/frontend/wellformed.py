"""Is a parsed model well formed enough to walk? Names are text, each attribute has the type its
op's schema declares, window attributes agree in length, initializers name a data type.

A damaged file can parse: python-protobuf hands back *bytes* for a string field that is not valid
UTF-8, and one flipped byte turns a Conv's INTS ``kernel_shape`` into FLOATS or a Constant's
tensor into a string. Left alone, these crash the walks far from their cause; here they are one
line naming the node. Unknown ops (no schema) and custom domains are not judged: costing a model
with an op cnncli does not know is a warning, not an error.
"""

from __future__ import annotations

from functools import lru_cache

import onnx
from onnx import AttributeProto, TensorProto

from cnncli.errors import ModelError

_DATA_TYPES = frozenset(TensorProto.DataType.values()) - {TensorProto.UNDEFINED}
_ATTR_TYPES = frozenset(AttributeProto.AttributeType.values()) - {AttributeProto.UNDEFINED}
# attributes giving one value per spatial axis, and how many values that is per axis
_PER_AXIS = {"kernel_shape": 1, "strides": 1, "dilations": 1, "pads": 2, "output_padding": 1}


@lru_cache(maxsize=None)
def _schema_types(op: str, domain: str, version: int) -> dict[str, int] | None:
    """attribute name -> declared AttributeType, for ops onnx knows at that opset; None otherwise."""
    try:
        schema = onnx.defs.get_schema(op, version, domain)
    except Exception:  # no such op (or a custom domain): not ours to judge
        return None
    return {name: int(attr.type) for name, attr in schema.attributes.items()}


def _text(value, what: str, name: str) -> str:
    if type(value) is not str:
        raise ModelError(f"'{name}' is damaged: {what} is not valid UTF-8 text")
    return value


def check_wellformed(model: onnx.ModelProto, name: str) -> None:
    """Raise ModelError (one line, naming the node) for the damage described above."""
    graph = model.graph
    opsets = {}
    for imp in model.opset_import:
        domain = _text(imp.domain, "an opset domain", name)
        opsets["" if domain == "ai.onnx" else domain] = imp.version
    _text(graph.name, "the graph's name", name)
    for prop in model.metadata_props:
        _text(prop.key, "a metadata key", name)
        _text(prop.value, "a metadata value", name)
    for vi in (*graph.input, *graph.output, *graph.value_info):
        _text(vi.name, "a tensor name", name)
    for t in graph.initializer:
        tname = _text(t.name, "an initializer name", name)
        if t.data_type not in _DATA_TYPES:
            raise ModelError(f"'{name}' is damaged: initializer '{tname}' has no valid data type ({t.data_type})")
    for node in graph.node:
        op = _text(node.op_type, "an op type", name)
        domain = _text(node.domain, "an op domain", name)
        label = f"node '{_text(node.name, 'a node name', name) or op}' ({op})"
        for tensor in (*node.input, *node.output):
            _text(tensor, f"a tensor name of {label}", name)
        if not node.attribute:
            continue
        version = opsets.get("" if domain == "ai.onnx" else domain)
        declared = None if version is None else _schema_types(op, domain, version)
        lengths = {}
        for a in node.attribute:
            aname = _text(a.name, f"an attribute name of {label}", name)
            if a.type not in _ATTR_TYPES:
                raise ModelError(f"'{name}' is damaged: attribute '{aname}' of {label} has no valid type")
            if declared is not None:
                want = declared.get(aname)
                if want is not None and want != a.type:
                    raise ModelError(
                        f"'{name}' is damaged: attribute '{aname}' of {label} is "
                        f"{AttributeProto.AttributeType.Name(a.type)}, its op declares "
                        f"{AttributeProto.AttributeType.Name(want)}"
                    )
            if aname in _PER_AXIS and a.type == AttributeProto.INTS:
                lengths[aname] = len(a.ints)
            elif a.type == AttributeProto.STRING:
                try:
                    a.s.decode("utf-8")
                except UnicodeDecodeError:
                    raise ModelError(f"'{name}' is damaged: attribute '{aname}' of {label} is not valid UTF-8") from None
        if len(lengths) > 1:
            axes = {n // _PER_AXIS[k] for k, n in lengths.items() if n % _PER_AXIS[k] == 0}
            if len(axes) != 1 or any(n % _PER_AXIS[k] for k, n in lengths.items()):
                shown = ", ".join(f"{k} has {n}" for k, n in sorted(lengths.items()))
                raise ModelError(f"'{name}' is damaged: the window attributes of {label} disagree ({shown} values)")
