"""README's quick start stays true: two self-contained commands, the second is what CI runs.

Both must work with a distribution's externally managed Python (PEP 668), so neither may call a
bare `pip`, `cnn` or `pytest` (those would be the system's): everything goes through `.venv/bin/`.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _quick_start_lines() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "README's quick start has no bash block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_quick_start_is_two_commands():
    lines = _quick_start_lines()
    assert len(lines) == 2, lines
    assert "cnn demo" in lines[0]
    assert "pytest" in lines[1]


def test_each_command_makes_and_uses_its_own_venv():
    for line in _quick_start_lines():
        steps = [shlex.split(step) for step in line.split("&&")]
        assert steps[0][:3] == ["python3", "-m", "venv"], line
        venv = steps[0][3]
        for argv in steps[1:]:
            assert argv[0].startswith(f"{venv}/bin/"), f"'{argv[0]}' in '{line}' is not the venv's own"


def test_ci_runs_the_second_command_exactly():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    executed = [ln.strip() for ln in ci.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert _quick_start_lines()[1] in executed
    assert "set -euo pipefail" in executed
