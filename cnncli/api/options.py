"""The options objects of the commands: frozen, keyword-only dataclasses whose fields are named as
the click parameters, with one default each, checked once (in ``__post_init__``, with
``BadArgument`` naming the option) whether they come from the command line or from Python.

A field is declared with :func:`opt`: its default, the option it is on the command line, and the
check that turns what was given (the CLI's text, or the Python value) into the one form the
engines take (``"3x4"`` and ``(3, 4)`` both become ``(3, 4)``). Cross-field rules go in
``validate()``. The option groups several commands share are :class:`ShapeOptions` (stats,
connectivity) and :class:`ImageOptions` (project, top, features).

This module stays light (no numpy, onnx or onnxruntime): the CLI reads the defaults at import.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from cnncli.choices import PRESETS, PROVIDERS
from cnncli.errors import BadArgument

Check = Callable[[str, Any], Any]  # (flag, value) -> normalised value, or raise BadArgument
PIXEL_SCALE = 1e6  # --mean and --std within ±1e6 (--std at least 1e-6 from 0): preprocessed pixels stay finite
INT64_MAX = 2**63 - 1  # the largest whole number any option takes (numpy, onnx and onnxruntime stop there)


def opt(default: Any, flag: str, check: Check, *, cli_default: Any = dataclasses.MISSING) -> Any:
    """A field of an options dataclass, with the check every value goes through. ``cli_default``:
    the command line's default where it differs by design (``out``: the API writes nothing unless
    asked, the CLI has a folder)."""
    meta = {"flag": flag, "check": check}
    if cli_default is not dataclasses.MISSING:
        meta["cli_default"] = cli_default
    return field(default=default, metadata=meta)


class Options:
    """Base of every options dataclass: runs each field's check, then ``validate()``. A value of a
    type no check foresaw (a TypeError, ValueError, OverflowError or MemoryError in the check) is a
    BadArgument naming the option too, never a crash of its own."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            flag_, value = f.metadata["flag"], getattr(self, f.name)
            try:
                object.__setattr__(self, f.name, f.metadata["check"](flag_, value))
            except (TypeError, ValueError, OverflowError, MemoryError) as exc:
                raise BadArgument(flag_, f"{_shown(value)} is not a value it takes ({type(exc).__name__})") from None
        self.validate()

    def validate(self) -> None:
        """Rules between fields (a subclass's own)."""

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]):
        """The options from Python keyword arguments; an unknown keyword is a BadArgument."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in kwargs if k not in names]
        if unknown:
            raise BadArgument(unknown[0], f"unknown option '{unknown[0]}' (options: {', '.join(names)})")
        return cls(**kwargs)

    @classmethod
    def from_cli(cls, params: Mapping[str, Any]):
        """The options from a click command's parameters (those named as fields)."""
        return cls(**{f.name: params[f.name] for f in dataclasses.fields(cls) if f.name in params})

    @classmethod
    def default(cls, name: str, cli: bool = True) -> Any:
        """A field's default, for click (``cli``: the command line's own where it has one)."""
        f = next(f for f in dataclasses.fields(cls) if f.name == name)
        return f.metadata.get("cli_default", f.default) if cli else f.default


# ----------------------------------------------------------------------------- checks


def _shown(value: Any, limit: int = 60) -> str:
    """A value as an error message shows it: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _items(value: Any) -> list | None:
    """The items of a sequence given for a list option, or None when ``value`` is not one: text,
    bytes (a sequence of small ints, but not numbers anyone typed), mappings and sets (no order)."""
    if isinstance(value, (str, bytes, bytearray, memoryview, Mapping, set, frozenset)):
        return None
    try:
        return list(value)
    except TypeError:
        return None


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def integer(minimum: int | None = None, optional: bool = False, maximum: int = INT64_MAX) -> Check:
    """A whole number (not a bool, not a float, not text) from ``minimum`` to ``maximum``."""

    def check(flag: str, value: Any) -> int | None:
        if value is None:
            if optional:
                return None
            raise BadArgument(flag, "a whole number is needed")
        if not _is_int(value):
            raise BadArgument(flag, f"{_shown(value)} is not a whole number")
        value = int(value)
        lowest = -INT64_MAX - 1 if minimum is None else minimum
        if value < lowest:
            raise BadArgument(flag, f"must be at least {lowest}, not {_shown(value)}")
        if value > maximum:
            raise BadArgument(flag, f"must be at most {maximum}, not {_shown(value)}")
        return value

    return check


def choice(allowed: tuple[str, ...], optional: bool = False) -> Check:
    def check(flag: str, value: Any) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str) or value not in allowed:
            raise BadArgument(flag, f"{_shown(value)} is not one of {', '.join(allowed)}")
        return value

    return check


def text(optional: bool = True) -> Check:
    def check(flag: str, value: Any) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise BadArgument(flag, f"{_shown(value)} is not text")
        return value

    return check


def path(optional: bool = True) -> Check:
    """A file or folder name: str or os.PathLike, kept as the text given."""

    def check(flag: str, value: Any) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, (str, os.PathLike)):
            raise BadArgument(flag, f"{_shown(value)} is not a path")
        value = os.fspath(value)
        if not isinstance(value, str) or not value:
            raise BadArgument(flag, f"{_shown(value)} is not a path")
        if "\0" in value:  # no file system takes one; os would raise ValueError
            raise BadArgument(flag, f"{_shown(value)}: a path cannot hold a NUL character")
        return value

    return check


def flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise BadArgument(name, f"{_shown(value)} is not True or False")
    return value


def optional_flag(name: str, value: Any) -> bool | None:
    return None if value is None else flag(name, value)


def floats(flag_: str, value: Any) -> tuple[float, ...] | None:
    """'0.5,0.4,0.3' or a sequence of numbers → a tuple of finite floats (non-zero for --std)."""
    if value is None:
        return None
    if isinstance(value, str):
        shown = value
        try:
            values = tuple(float(v) for v in value.replace(" ", "").split(",") if v)
        except ValueError:
            raise BadArgument(flag_, f"'{value}' is not a comma-separated list of numbers") from None
    else:
        items = [value] if isinstance(value, numbers.Real) else _items(value)
        if items is None or not items or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in items):
            raise BadArgument(flag_, f"{_shown(value)} is not a list of numbers")
        values = tuple(float(v) for v in items)
        shown = ",".join(map(str, values))
    if not all(math.isfinite(v) for v in values):
        raise BadArgument(flag_, f"'{shown}': values must be finite numbers")
    if flag_ == "--std" and any(v == 0 for v in values):
        raise BadArgument(flag_, f"'{shown}': values must be non-zero")
    if any(abs(v) > PIXEL_SCALE for v in values) or flag_ == "--std" and any(abs(v) < 1 / PIXEL_SCALE for v in values):
        # (pixel - mean) / std past float32 would make every input, and so every result, inf or NaN
        raise BadArgument(flag_, f"'{shown}': values must lie within ±{PIXEL_SCALE:g}"
                                 + (f" and away from 0 by {1 / PIXEL_SCALE:g}" if flag_ == "--std" else ""))
    return values


def parse_dims(flag_: str, value: str) -> tuple[int, ...]:
    """'1x3x224x224' (or with ',' or '×') → (1, 3, 224, 224)."""
    parts = re.split(r"[x,×]", value.strip().lower())
    try:
        out = tuple(int(p) for p in parts)
    except ValueError:
        raise BadArgument(flag_, f"'{value}' is not a shape like 1x3x224x224") from None
    if not out or any(d < 1 for d in out):
        raise BadArgument(flag_, f"'{value}': every dim must be a positive integer")
    return out


def dims(count: int | tuple[int, ...] | None = None, example: str = "HxW") -> Check:
    """'224x224' or (224, 224) → a tuple of positive ints (``count`` of them, or one of the counts)."""
    counts = (count,) if isinstance(count, int) else count

    def check(flag_: str, value: Any) -> tuple[int, ...] | None:
        if value is None:
            return None
        if isinstance(value, str):
            out = parse_dims(flag_, value)
        else:
            items = _items(value)
            if items is None:
                raise BadArgument(flag_, f"{_shown(value)} should be {example}")
            if not all(_is_int(d) for d in items):
                raise BadArgument(flag_, f"{_shown(value)} should be {example} (whole numbers)")
            out = tuple(int(d) for d in items)
            if not out or any(d < 1 for d in out):
                raise BadArgument(flag_, f"{_shown(value)}: every dim must be a positive integer")
        if counts is not None and len(out) not in counts:
            shown = value if isinstance(value, str) else "x".join(map(str, out))
            raise BadArgument(flag_, f"'{shown}' should be {example}")
        if any(d >= 2**63 for d in out):
            raise BadArgument(flag_, f"{_shown(value)}: a dim beyond int64")
        return out

    return check


def memory_size(flag_: str, value: Any) -> int | None:
    """'64G', '512M' or a number of bytes → bytes."""
    if value is None:
        return None
    if _is_int(value):
        size = int(value)
        if size <= 0:
            raise BadArgument(flag_, f"'{value}' must be more than 0")
    elif isinstance(value, str):
        from cnncli.engine.memory import parse_size

        size = parse_size(value, flag_)
    else:
        raise BadArgument(flag_, f"{_shown(value)} is not a size like 64G, 512M or 2000000000")
    if size > INT64_MAX:
        raise BadArgument(flag_, f"{_shown(value)} is more memory than any machine has")
    return size


def input_shapes(flag_: str, value: Any) -> dict[str, tuple[int, ...]]:
    """('image=1x3x224x224', …) from the CLI, or {name: shape or 'AxB…'} from Python → {name: dims}."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, (list, tuple)):
        items = []
        for item in value:
            if not isinstance(item, str):
                raise BadArgument(flag_, f"{_shown(item)} is not NAME=SHAPE, e.g. input=1x3x224x224")
            name, sep, shape = item.rpartition("=")
            if not sep or not name:
                raise BadArgument(flag_, f"'{item}' is not NAME=SHAPE, e.g. input=1x3x224x224")
            items.append((name, shape))
    else:
        raise BadArgument(flag_, f"{_shown(value)} is not a mapping of input names to shapes")
    shape_of = dims(example="a shape like 1x3x224x224")
    out = {}
    for name, shape in items:
        if not isinstance(name, str):
            raise BadArgument(flag_, f"{_shown(name)} is not an input name")
        out[name] = shape_of(flag_, shape)
    return out


def count_or_all(flag_: str, value: Any) -> int | str:
    """A whole number of at least 1, or 'all'."""
    if isinstance(value, str) and value.strip().lower() == "all":
        return "all"
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise BadArgument(flag_, f"'{value}' is not a number or 'all'") from None
    return integer(1)(flag_, value)


def channel_list(flag_: str, value: Any) -> str | None:
    """An int, a list of ints, '3,5,12' or 'all' → the text form the engines parse ('3,5,12', 'all')."""
    if value is None or isinstance(value, str):
        return value
    if _is_int(value):
        return str(int(value))
    items = _items(value)
    if items is None or not all(_is_int(c) for c in items):
        raise BadArgument(flag_, f"{_shown(value)} is not a channel number, a list of them or 'all'")
    return ",".join(str(int(c)) for c in items)


# ----------------------------------------------------------------------------- shared groups


@dataclass(frozen=True, kw_only=True)
class ShapeOptions(Options):
    """How the graph's inputs are fixed before costing (stats, connectivity)."""

    batch: int = opt(1, "--batch", integer(1))
    input_shapes: dict = opt(None, "--input-shape", input_shapes)


@dataclass(frozen=True, kw_only=True)
class ImageOptions(Options):
    """How images become model inputs, and where the model runs (project, top, features)."""

    preset: str | None = opt(None, "--preset", choice(PRESETS, optional=True))
    mean: tuple | None = opt(None, "--mean", floats)
    std: tuple | None = opt(None, "--std", floats)
    bgr: bool | None = opt(None, "--bgr", optional_flag)
    size: tuple | None = opt(None, "--size", dims(2))
    input_name: str | None = opt(None, "--input-name", text())
    provider: str = opt("auto", "--provider", choice(PROVIDERS))
    verbose: bool = opt(False, "--verbose", flag)
    max_memory: int | None = opt(None, "--max-memory", memory_size)
