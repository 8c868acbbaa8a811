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


REVERSE_BUDGET = 128 * 1024**2  # bytes the rows of one batched reverse run aim at (see reverse_batch)
MAX_REVERSE_BATCH = 64  # rows per reverse run at most: larger batches were no faster on CPU


def reverse_row_bytes(graph, input_name: str, target: str) -> int:
    """Bytes one seed row of the reverse pass takes: the reverse graph mirrors every step between
    the input and ``target``, and onnxruntime's arena holds a float32 tensor per step for each
    row of the batch (measured on a torchvision ResNet-18's last block: 28 MB a row, this gives
    22 MB)."""
    from cnncli.frontend.graph import numel
    from cnncli.reverse import dynamic_tensors, path_nodes

    nodes = path_nodes(graph, target, dynamic_tensors(graph, input_name))
    steps = [input_name] + [o for n in nodes for o in n.output if o]
    checked = run_estimate(graph, input_name, target, 1, 2) - run_estimate(graph, input_name, target, 1, 1)
    return max(4 * sum(numel(graph.shape(name)) or 0 for name in steps), checked)  # never below what the check counts


def reverse_batch(graph, input_name: str, target: str, wanted: int, limit: int | None = None,
                  budget: int = REVERSE_BUDGET) -> int:
    """Rows per batched reverse run when the user gives no --batch-size: as many as fit
    ``budget`` (at most ``wanted`` and MAX_REVERSE_BATCH), never fewer than one channel (the
    floor: one row always runs) nor more than the memory available, or ``limit`` (the ceiling).

    Larger batches do not make the reverse pass faster on a CPU (the same work, in one call
    instead of several), while memory grows with each row: on ResNet-18's last block a batch of
    64 took 2.3 GB against 0.7 GB for 4, and was slower, the writer threads waiting for it."""
    row = max(1, reverse_row_bytes(graph, input_name, target))
    rows = max(1, min(wanted, MAX_REVERSE_BATCH, budget // row))
    available = available_memory() if limit is None else limit
    if available is not None:
        fixed = run_estimate(graph, input_name, target, 1, 1)
        rows = min(rows, max(1, (available - fixed) // row + 1))
    return rows


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
