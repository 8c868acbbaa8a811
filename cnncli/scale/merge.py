"""Merging top-k lists: the reduce step of `cnn top --engine ray`.

Each block of images yields its own `TopK` (the local engine's class, filled by the local engine's
`offer`); the driver folds the blocks together with `merge`. Entries are ordered by the local
engine's total order (`cnncli.engine.top.top_order`: activation descending, then image number
ascending), so `merge` is associative and commutative and the result is the top k of the union:
it cannot depend on how the images were split into blocks or in which order blocks arrive.
"""

from __future__ import annotations

import numpy as np

from cnncli.engine.top import TopK, top_order


def merge(a: TopK, b: TopK) -> TopK:
    """The top k (of ``a``'s k) per channel of the union of ``a`` and ``b``; neither is changed.
    Both must hold the same channels; image numbers must be unique across the two."""
    if a.values.shape[0] != b.values.shape[0]:
        raise ValueError(f"cannot merge top-k lists of {a.values.shape[0]} and {b.values.shape[0]} channels")
    vals = np.concatenate([a.values, b.values], axis=1)
    ids = np.concatenate([a.ids, b.ids], axis=1)
    locs = np.concatenate([a.locs, b.locs], axis=1)
    order = top_order(vals, ids, a.k)
    rows = np.arange(vals.shape[0])[:, None]
    out = TopK(vals.shape[0], a.k)
    out.values, out.ids, out.locs = vals[rows, order], ids[rows, order], locs[rows, order]
    live = {int(i) for i in np.unique(out.ids) if i >= 0}
    out.paths = {i: p for src in (a.paths, b.paths) for i, p in src.items() if i in live}
    return out


def to_record(top: TopK) -> dict[str, np.ndarray]:
    """One block's top-k as a one-row Ray Data batch (fixed-shape tensor columns, paths as JSON)."""
    import json

    return {
        "values": top.values[None], "ids": top.ids[None], "locs": top.locs[None],
        "paths": np.array([json.dumps(sorted(top.paths.items()))], dtype=object),
    }


def from_record(values: np.ndarray, ids: np.ndarray, locs: np.ndarray, paths_json: str) -> TopK:
    """The inverse of `to_record` for one row."""
    import json

    top = TopK(values.shape[0], values.shape[1])
    top.values = np.asarray(values, dtype=np.float64)
    top.ids = np.asarray(ids, dtype=np.int64)
    top.locs = np.asarray(locs, dtype=np.int64)
    top.paths = {int(i): str(p) for i, p in json.loads(paths_json)}
    return top
