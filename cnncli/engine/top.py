"""`cnn top`: the paper's Fig. 2 over your own images. Scan a folder, keep each channel's k
strongest activations (streaming, memory bounded by k × channels), then project each kept unit
alone (keep max) and crop its receptive field out of the projection and of the image."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np


def top_order(values: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """Per row, the column indices of the k best entries: value descending, then image number
    ascending (empty slots, id -1, last). A total order, so merging top-k lists is associative."""
    # lexsort: last key is primary
    return np.lexsort((np.where(ids < 0, np.iinfo(np.int64).max, ids), -values), axis=1)[:, :k]


class TopK:
    """Per channel, the k largest (activation, image) pairs seen so far; ties go to the earlier image."""

    def __init__(self, n_channels: int, k: int):
        self.k = k
        self.values = np.full((n_channels, k), -np.inf, dtype=np.float64)
        self.ids = np.full((n_channels, k), -1, dtype=np.int64)
        self.locs = np.zeros((n_channels, k, 2), dtype=np.int64)
        self.paths: dict[int, str] = {}

    def offer(self, maxima: np.ndarray, locs: np.ndarray, ids: np.ndarray, paths: list[str]) -> None:
        """maxima [B, C], locs [B, C, 2], ids [B] (global image numbers), paths [B]."""
        vals = np.concatenate([self.values, maxima.T.astype(np.float64)], axis=1)
        all_ids = np.concatenate([self.ids, np.broadcast_to(ids, (vals.shape[0], len(ids)))], axis=1)
        all_locs = np.concatenate([self.locs, locs.transpose(1, 0, 2)], axis=1)
        order = top_order(vals, all_ids, self.k)
        rows = np.arange(vals.shape[0])[:, None]
        self.values, self.ids, self.locs = vals[rows, order], all_ids[rows, order], all_locs[rows, order]
        for i, p in zip(ids, paths):
            self.paths[int(i)] = p
        live = set(int(i) for i in np.unique(self.ids) if i >= 0)
        self.paths = {i: p for i, p in self.paths.items() if i in live}

    def entries(self, row: int) -> list[tuple[float, str, list[int]]]:
        return [
            (float(v), self.paths[int(i)], [int(a) for a in loc])
            for v, i, loc in zip(self.values[row], self.ids[row], self.locs[row])
            if i >= 0
        ]


def batched(items: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def channel_maxima(act: np.ndarray, chans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Activations [B, C, *spatial] → per image and chosen channel the spatial maximum [B, len(chans)]
    and its first location [B, len(chans), 2] (row-major argmax)."""
    sel = act.reshape(act.shape[0], act.shape[1], -1)  # a view; fancy-indexing copies the whole batch
    if not np.array_equal(chans, np.arange(act.shape[1])):
        sel = sel[:, chans]
    flat = sel.argmax(axis=2)
    maxima = np.take_along_axis(sel, flat[:, :, None], axis=2)[:, :, 0]
    spatial = act.shape[2:]
    locs = np.stack(np.unravel_index(flat, spatial), axis=2) if spatial else np.zeros((*flat.shape, 2), int)
    return maxima, locs


@dataclass
class ScanResult:
    top: TopK
    scanned: int
    skipped: list[str]


def scan(session, input_name: str, target: str, paths: Iterable[str], load: Callable[[str], np.ndarray],
         channels: list[int], k: int, batch_size: int, tick: Callable[[int], None] | None = None) -> ScanResult:
    """Forward passes in batches; per image and channel the spatial argmax; the top k per channel."""
    tops, scanned, skipped = scan_tensors(session, input_name, {target: channels}, paths, load, k, batch_size, tick)
    return ScanResult(tops[target], scanned, skipped)


def scan_tensors(session, input_name: str, channels: dict[str, list[int]], paths: Iterable[str],
                 load: Callable[[str], np.ndarray], k: int, batch_size: int,
                 tick: Callable[[int], None] | None = None) -> tuple[dict[str, TopK], int, list[str]]:
    """:func:`scan` for several tensors at once (`cnn report`: every layer from one forward pass per
    batch): per tensor the top k of each of its ``channels[tensor]``; (tops, scanned, skipped)."""
    tensors = list(channels)
    tops = {t: TopK(len(channels[t]), k) for t in tensors}
    chans = {t: np.asarray(channels[t]) for t in tensors}
    scanned, skipped, next_id = 0, [], 0
    for batch in batched(paths, batch_size):
        arrays, good = [], []
        for p in batch:
            try:
                arrays.append(load(p))
                good.append(p)
            except Exception:  # an unreadable image is skipped and reported, never ends a long scan
                skipped.append(p)
        if tick:
            tick(len(batch))
        if not arrays:
            continue
        acts = session.run(tensors, {input_name: np.concatenate(arrays, axis=0)})
        ids = np.arange(next_id, next_id + len(good))
        next_id += len(good)
        for t, act in zip(tensors, acts):
            maxima, locs = channel_maxima(act, chans[t])
            tops[t].offer(maxima, locs, ids, good)
        scanned += len(good)
    return tops, scanned, skipped
