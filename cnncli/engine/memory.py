"""How much memory a run will take, estimated from the shapes before anything runs, against
what the machine has (``MemAvailable`` in /proc/meminfo) or a limit the user gives.

A 100000x100000 input needs 120 GB for itself alone; without this check the kernel kills the
process minutes later, with no message.
"""

from __future__ import annotations

import re
from decimal import Decimal

from cnncli.errors import BadArgument, CnnError

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(text: str, label: str = "--max-memory") -> int:
    """'64G', '512M', '1.5T', '2000000000' (bytes); K/M/G/T are powers of 1024 (a trailing B
    or iB is allowed)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", str(text).upper())
    if not m:
        raise BadArgument(label, f"'{text}' is not a size like 64G, 512M or 2000000000")
    value = int(Decimal(m.group(1)) * _UNITS[m.group(2)])  # exact: a float of 400 digits is inf
    if value <= 0:
        raise BadArgument(label, f"'{text}' must be more than 0")
    return value


def available_memory() -> int | None:
    """Bytes the kernel says a new allocation can get without swapping (MemAvailable), or None
    where /proc/meminfo cannot be read (not Linux): then no check is made."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def human(n: int) -> str:
    """Bytes in binary units with three significant figures: '23.4 GiB'."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def _itemsize(elem_type: int) -> int:
    from onnx import helper

    try:
        return helper.tensor_dtype_to_np_dtype(elem_type).itemsize
    except Exception:  # an unknown or sub-byte type: count it as float32
        return 4


def run_estimate(graph, input_name: str, target: str, rows: int = 1, reverse_rows: int = 0) -> int:
    """Bytes a run takes, from the shapes of ``graph`` (analysed at batch 1): the input and every
    activation between it and ``target`` (onnxruntime reuses some buffers, the projector keeps
    most of them) for each of ``rows`` forward rows, plus, for ``reverse_rows`` rows of the
    reverse pass, the signal at its two largest steps and the projection; weights once more for
    each session that holds them."""
    from cnncli.frontend.graph import numel
    from cnncli.reverse import dynamic_tensors, path_nodes

    def count(name: str) -> int:
        return numel(graph.shape(name)) or 0

    def nbytes(name: str) -> int:
        return count(name) * _itemsize(graph.types.get(name, 1))

    dynamic = dynamic_tensors(graph, input_name)
    nodes = path_nodes(graph, target, dynamic)
    outputs = [o for n in nodes for o in n.output if o]
    weights = sum(nbytes(i) for n in nodes for i in set(n.input) if i and i not in dynamic)
    forward = rows * (nbytes(input_name) + sum(nbytes(o) for o in outputs)) + weights
    reverse = 0
    if reverse_rows:  # the reverse pass runs in float32
        largest = max((count(o) for o in outputs), default=0)
        reverse = reverse_rows * 4 * (count(input_name) + 2 * largest) + weights
    return forward + reverse


def topk_bytes(channels: int, k: int, batch: int) -> int:
    """Bytes `cnn top`'s scan keeps for the top k per channel (value, image number and [y, x] per
    slot), with the merge of one batch into them (the concatenation and its sort order, twice)."""
    return 3 * channels * (k + batch) * (8 + 8 + 16)


def check_memory(needed: int, limit: int | None = None, what: str = "this run", hint: str = "") -> None:
    """Refuse (CnnError) when ``needed`` bytes exceed ``limit`` (default: the memory available
    now). ``hint`` names what would make the run smaller, e.g. a smaller --size."""
    available = available_memory() if limit is None else limit
    if available is None or needed <= available:
        return
    where = f"the limit of {human(available)} given with --max-memory" if limit is not None else \
        f"the {human(available)} available on this machine"
    raise CnnError(
        f"{what} needs about {human(needed)} of memory, more than {where}"
        + (f"; {hint}" if hint else "")
        + ("" if limit is not None else " (--max-memory SIZE sets another limit)")
    )
