"""The layer order of the package, enforced: every import inside diffx points down.

    kernels < functional < nn < effects, losses < analysis < io < data < tasks < commands

(``diffx/_validation.py`` and ``diffx/_errors.py`` sit below everything; ``effects`` and
``losses`` share a rank and do not import each other.) Every ``import`` and ``from ... import``
statement of every module is read from its source, at module level or inside a function
(lazy imports count), so an upward import cannot hide. Within a package, modules may import
each other, but not in a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import diffx

PACKAGE = Path(diffx.__file__).parent

LAYERS: dict[str, int] = {
    "_validation": 0,
    "_errors": 0,
    "kernels": 1,
    "functional": 2,
    "nn": 3,
    "effects": 4,
    "losses": 4,
    "analysis": 5,
    "io": 6,
    "data": 7,
    "tasks": 8,
    "commands": 9,
}
"""The rank of each top-level module or package of diffx (lower ranks are imported by higher)."""


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "assets" not in p.parts)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, name: str | None = None) -> list[tuple[int, str]]:
    """``(line, module)`` for every diffx module that ``path`` (module ``name``) imports, lazily
    or not; ``from pkg import name`` counts as importing ``pkg.name`` when that is a module,
    else ``pkg``."""
    name = name or module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                is_module = (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(
                    ".py"
                ).is_file() or (PACKAGE.parent / candidate.replace(".", "/")).is_dir()
                found.append((node.lineno, candidate if is_module else target))
    return [(line, m) for line, m in found if m == "diffx" or m.startswith("diffx.")]


def layer_of(module: str) -> str | None:
    """The layer (top-level module or package) of ``diffx.x.y``; ``None`` for ``diffx``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_module_has_a_layer():
    unplaced = {layer_of(module_name(p)) for p in modules()} - set(LAYERS) - {None}
    assert not unplaced, f"modules of diffx with no place in the layer order: {sorted(unplaced)}"


def upward_imports(sources: list[tuple[Path, str]]) -> list[str]:
    """``file:line: ...`` for every import of the ``(path, module name)`` sources that points
    to the same rank or higher in another layer."""
    problems = []
    for path, name in sources:
        source = layer_of(name)
        if source is None:
            continue
        for line, target in imported_modules(path, name):
            layer = layer_of(target)
            if layer is None or layer == source:
                continue  # `import diffx` (the version), or within its own layer
            if LAYERS[layer] >= LAYERS[source]:
                problems.append(f"{path}:{line}: {source} imports {target} ({layer})")
    return problems


def test_no_import_points_up_or_sideways():
    problems = upward_imports([(path, module_name(path)) for path in modules()])
    assert not problems, "imports against the layer order:\n" + "\n".join(problems)


def test_no_circle_of_imports():
    graph: dict[str, set[str]] = {}
    for path in modules():
        name = module_name(path)
        graph[name] = {t for _, t in imported_modules(path) if t != name}
    # A package's __init__ re-exports its modules; an edge into it is an edge into those.
    packages = {module_name(p) for p in modules() if p.name == "__init__.py"}
    circles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if nxt in packages and node.startswith(nxt + "."):
                continue  # a module importing its own package's names: not a cycle of files
            if state.get(nxt) == "open":
                circles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not circles, "circles of imports:\n" + "\n".join(circles)


@pytest.mark.parametrize(
    "source",
    [
        "from diffx.tasks import StyleTransfer\n",
        "import diffx.data.style_transfer\n",
        "def f():\n    from diffx.data.style_transfer import X\n",
        "from . import x\nfrom ..losses import spectral\n",
    ],
)
def test_the_check_finds_an_upward_import(tmp_path, source):
    # The checker on a planted module of the nn layer: module-level, lazy and relative imports
    # of a higher layer (tasks, data) or of a sibling of the same rank (losses beside effects).
    planted = tmp_path / "planted.py"
    planted.write_text(source)
    name = "diffx.effects.planted" if "losses" in source else "diffx.nn.planted"
    problems = upward_imports([(planted, name)])
    assert len(problems) == 1, problems
    assert "imports diffx." in problems[0]


def test_the_check_allows_downward_imports(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("from diffx.functional import sosfilt\nimport diffx.kernels.iir\n")
    assert upward_imports([(planted, "diffx.nn.planted")]) == []


def test_scripts_benchmarks_and_notebooks_use_the_library_not_the_commands():
    # Command modules are front ends: what a script needs from one belongs in a layer below.
    import json

    root = PACKAGE.parent
    problems = []
    scripts = [p for folder in ("scripts", "benchmarks") for p in (root / folder).glob("*.py")]
    sources = [(p, p.read_text()) for p in scripts]
    for notebook in (root / "notebooks").glob("*.ipynb"):
        cells = json.loads(notebook.read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        sources.append((notebook, "\n".join(
            line for line in code.splitlines() if not line.lstrip().startswith(("!", "%"))
        )))  # fmt: skip
    for path, text in sources:
        for node in ast.walk(ast.parse(text, str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            if any(n == "diffx.commands" or n.startswith("diffx.commands.") for n in names):
                problems.append(f"{path.relative_to(root)}:{node.lineno}")
    assert not problems, "imports of diffx.commands outside the package:\n" + "\n".join(problems)
