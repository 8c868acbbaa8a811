"""Telling a damaged model from a bug, at no cost to a model that is fine.

A file can parse and still be damaged (see :mod:`cnncli.frontend.wellformed`): a name that is not
UTF-8, an attribute of the wrong type. Checking every node up front costs about 10 µs a node
(0.15 s on a 16,000-node graph, a fifth of a whole `cnn stats`), so the check runs only when a
command or API call fails with an exception that is not one of the tool's own: if a model parsed
during the call is damaged, the failure becomes that one-line ModelError; if not, it is a bug and
goes up as it is. Nothing is kept once the call ends.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from cnncli.frontend.parsed import parsed as _parsed


def explain_if_damaged(model) -> None:
    """Raise the damage error if ``model`` is damaged (a slow path's check: a shape that stays
    unknown, say); do nothing if it is sound. Named as the loader named it, when it did."""
    from cnncli.frontend.wellformed import check_wellformed

    name = next((n for m, n in (_parsed.get() or ()) if m is model), "the model")
    check_wellformed(model, name)


@contextmanager
def damage_explained() -> Iterator[None]:
    token = _parsed.set([])
    try:
        yield
    except Exception as exc:
        from cnncli.errors import CnnError

        if not isinstance(exc, CnnError) and not type(exc).__module__.startswith("click"):
            from cnncli.frontend.wellformed import check_wellformed

            for model, name in _parsed.get():
                try:
                    check_wellformed(model, name)
                except CnnError as damage:
                    raise damage from None
        raise
    finally:
        _parsed.reset(token)
