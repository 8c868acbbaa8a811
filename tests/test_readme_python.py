"""README's "From Python" section runs as written: every ```python block of the README is executed
from the repository root, and each ``print(...)  # → text`` must print exactly ``text``. So the
README cannot drift from the API."""

from __future__ import annotations

import os
import re

import pytest

from helpers import REPO

README = REPO / "README.md"


def python_blocks() -> list[tuple[int, str]]:
    text = README.read_text(encoding="utf-8")
    return [(text[: m.start()].count("\n") + 2, m.group(1)) for m in re.finditer(r"```python\n(.*?)```", text, re.S)]


def test_the_readme_has_a_from_python_section_with_code():
    text = README.read_text(encoding="utf-8")
    assert "## From Python" in text
    assert len(python_blocks()) >= 3


@pytest.mark.parametrize("start, code", python_blocks(), ids=lambda v: f"line{v}" if isinstance(v, int) else "")
def test_readme_python_block_runs(start, code, monkeypatch):
    monkeypatch.chdir(REPO)
    expected: dict[int, str] = {}
    lines = []
    for i, line in enumerate(code.splitlines()):
        m = re.match(r"^(\s*)print\((.*)\)\s*#\s*→\s*(.+)$", line)
        if m:
            expected[i] = m.group(3).strip()
            line = f"{m.group(1)}__check({i}, {m.group(2)})"
        lines.append(line)
    seen = []

    def check(i, *args):
        out = " ".join(str(a) for a in args)
        assert out == expected[i], f"README line {start + i}: printed {out!r}, the README says {expected[i]!r}"
        seen.append(i)

    namespace = {"__check": check, "__name__": "__readme__"}
    exec(compile("\n".join(lines), f"README.md:{start}", "exec"), namespace)  # noqa: S102
    assert sorted(set(seen)) == sorted(expected), "a checked print did not run"
    assert os.getcwd() == str(REPO)
