"""The code layout README describes holds: each folder imports only the folders below it (every
import statement, those inside functions included), and nothing anywhere, the benchmarks
included, imports in a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from helpers import REPO

BASE = {"errors", "choices", "columns", "registry", "atomic", "bundled", "gcpause", "escaping"}
# folder (or top-level module) -> what it may import besides itself; README "Code layout"
ALLOWED = {
    "frontend": BASE,
    "costs": BASE | {"frontend"},
    "runtime": BASE,
    "reverse": BASE | {"runtime", "frontend"},
    "imaging": BASE,
    "render": BASE,
    "engine": BASE | {"reverse", "runtime", "costs", "imaging", "frontend"},
    "scale": BASE | {"engine", "runtime", "imaging", "frontend"},
    "api": BASE | {"scale", "engine", "reverse", "runtime", "render", "imaging", "costs", "frontend"},
    "commands": BASE | {"api", "render", "cli_options"},
    "cli": BASE | {"commands", "api", "render", "cnncli", "cli_options"},
    "cli_options": BASE | {"api", "render"},
    "__main__": {"cli"},
    "cnncli": BASE | {"api"},  # the package's lazy names
}


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, package: str | None = None) -> set[str]:
    """Every module ``path`` imports (absolute names; relative imports resolved in ``package``),
    except under ``if TYPE_CHECKING:`` (annotations only, never run)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            node.body = []
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if package else ""
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            out.add(name)
            out.update(f"{name}.{a.name}" for a in node.names)  # `from pkg import module`
    return out


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "cnncli":
        return None
    return parts[1] if len(parts) > 1 else "cnncli"


def _package_modules():
    root = REPO
    for path in sorted((REPO / "cnncli").rglob("*.py")):
        yield _module_name(path, root), path


def test_every_folder_imports_only_the_folders_below_it():
    known = {name for name, _ in _package_modules()}
    bad = []
    for name, path in _package_modules():
        src = _layer(name)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for target in _imports(path, package):
            if target not in known:
                continue  # `from cnncli.x import name`: the module itself is listed too
            dst = _layer(target)
            if dst is None or dst == src or src in BASE and dst in BASE:
                continue
            if dst not in ALLOWED.get(src, set()):
                bad.append(f"{name} imports {target} ({src} -> {dst})")
    assert not bad, "\n".join(bad)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node, stack):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return found


def test_no_import_cycle_in_the_package():
    modules = dict(_package_modules())
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        # a package's __init__ importing its own submodules is how packages are built, not a cycle
        graph[name] = {t for t in _imports(path, package) if t in modules and t != name and not t.startswith(name + ".")
                       and not name.startswith(t + ".")}
    graph.pop("cnncli", None)  # the lazy facade: imports api names on first use only
    assert _cycles(graph) == []


@pytest.mark.parametrize("folder", ["benchmarks", "tests"])
def test_no_import_cycle_among_scripts(folder):
    scripts = {p.stem: p for p in (REPO / folder).rglob("*.py")}
    graph = {name: {t.split(".")[0] for t in _imports(path)} & set(scripts) - {name} for name, path in scripts.items()}
    assert _cycles(graph) == []


def test_the_readme_states_the_layers():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Code layout", 1)[1]
    for folder in ALLOWED:
        if folder in ("__main__", "cnncli"):
            continue
        assert f"`cnncli/{folder}" in section, folder
