"""Pausing Python's cyclic garbage collector around allocation-heavy stretches."""

from __future__ import annotations

import gc
from contextlib import contextmanager


@contextmanager
def gc_paused():
    """Pause the cyclic garbage collector for a stretch that makes many objects and frees few
    (walking or rendering a graph of 10^4 nodes): otherwise it scans them again and again, for
    5 to 20% of the time. Nests; restores the collector as it found it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
