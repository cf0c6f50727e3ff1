"""The package layout is the architecture: imports point only downward, and no module imports itself back."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hil", "drivers", "calibration")
# Bottom to top: a module may import from its own layer or a lower one (see hil/__init__.py).
LAYERS = (
    "hil.common",
    "hil.data",
    "hil.physics",
    "hil.solvers",
    "hil.learning",
    "drivers",
    "hil.bench",
    "calibration",
    "hil.benchmarks",
    "hil.cli",
)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The project module that an import of ``name`` loads (the longest matching prefix)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(path: Path) -> set[str]:
    """Project modules imported anywhere in ``path`` (module level and inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(m for m in map(_resolve, names) if m is not None)
    return found


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def _layer(module: str) -> int | None:
    for rank, prefix in enumerate(LAYERS):
        if module == prefix or module.startswith(prefix + "."):
            return rank
    return None


def test_every_module_belongs_to_a_layer():
    loose = [m for m in MODULES if _layer(m) is None and m not in ("hil", "hil.__main__")]
    assert loose == [], f"modules outside the layers of hil/__init__.py: {loose}"


def test_imports_point_downward():
    upward = [
        f"{m} -> {d}"
        for m, deps in GRAPH.items()
        for d in deps
        if _layer(m) is not None and _layer(d) is not None and _layer(d) > _layer(m)
    ]
    assert upward == [], "imports that point up a layer:\n" + "\n".join(sorted(upward))


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    assert _cycles() == []


def test_the_checker_sees_a_cycle_and_an_upward_import():
    """The checks above can fail: a planted cycle and an upward edge are found."""
    GRAPH["hil.physics.optics"].add("hil.learning.bundle")
    try:
        assert any("hil.physics.optics" in c for c in _cycles())
        assert _layer("hil.learning.bundle") > _layer("hil.physics.optics")
    finally:
        GRAPH["hil.physics.optics"].discard("hil.learning.bundle")
