"""The models parsed during one command or API call, by the name the loader gave them: what a
damage error found far from the loader (a node's window, an inferred shape) names the model by.
A leaf module: :mod:`cnncli.frontend.damage` and the checks both read it."""

from __future__ import annotations

from contextvars import ContextVar

parsed: ContextVar[list | None] = ContextVar("cnncli_parsed_models", default=None)


def note_parsed(model, name: str) -> None:
    """Called by the loader for each model it parses (kept only inside damage_explained)."""
    seen = parsed.get()
    if seen is not None:
        seen.append((model, name))


def damaged(what: str, state: str = "is damaged"):
    """The ModelError for damage found where the model is not at hand: it names the model when
    one model was parsed during the call ("'m.onnx' is damaged: …")."""
    from cnncli.errors import ModelError

    names = {n for _, n in parsed.get() or ()}
    return ModelError(f"'{names.pop()}' {state}: {what}" if len(names) == 1 else f"the model {state}: {what}")
