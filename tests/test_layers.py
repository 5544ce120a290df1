"""The package imports only downwards, with no cycle, and every module imports on its own."""

import ast
import importlib
import sys
from pathlib import Path

import pytest

import medsagan

ROOT = Path(medsagan.__file__).parent

# Lowest first. A module may import its own layer's modules (without a cycle) and any lower layer's.
LAYERS = [
    {"errors"},
    {
        "files",
        "flops",
        "geometry",
        "records",
        "augment",
        "devices",
        "random_state",
        "training_log",
        "budget",
        "config",
        "config_parse",
        "presets",
        "jobs",
        "grids",
    },
    {"data", "models", "pseudo_anomalies", "distributed"},
    {"losses", "runs", "evaluate"},
    {"trainer", "time_budget", "train", "compute", "inference", "viz", "official", "export", "predict"},
    {"api", "demo", "benchmark", "serve", "cli", "cli_base", "cli_tools", "config_docs", "__main__", "__init__"},
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def module_names() -> dict[str, Path]:
    names = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = ("medsagan", *path.relative_to(ROOT).with_suffix("").parts)
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


MODULES = module_names()


def unit(module: str) -> str:
    """The layer unit of a module: its top-level module or sub-package under medsagan."""
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    return parts[1]


def imports(module: str) -> set[str]:
    """medsagan modules that `module` imports anywhere in its body (lazy imports included)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [f"{target}.{alias.name}" for alias in node.names]
            modules = [c for c in candidates if c in MODULES]
            found.update(modules or ([target] if target in MODULES else []))
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in MODULES)
    # Importing a.b.c runs the __init__ of a.b too, unless a.b is the importer's own package (already
    # running) or the root package (every import runs it).
    implied = {".".join(m.split(".")[:i]) for m in found for i in range(2, len(m.split(".")))}
    own = {".".join(module.split(".")[:i]) for i in range(1, len(module.split(".")) + 1)}
    return (found | implied) - own - {"medsagan"}


def test_every_import_goes_down_or_across_a_layer():
    upward = []
    for module in MODULES:
        for target in imports(module):
            source_unit, target_unit = unit(module), unit(target)
            assert source_unit in RANK and target_unit in RANK, f"{source_unit} or {target_unit} has no layer"
            if RANK[target_unit] > RANK[source_unit]:
                upward.append(f"{module} -> {target}")
    assert not upward, "imports that go up a layer:\n" + "\n".join(upward)


def test_no_module_imports_itself_through_others():
    graph = {module: imports(module) for module in MODULES}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*trail, node, nxt]
            if nxt not in state and (cycle := visit(nxt, [*trail, node])):
                return cycle
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module, [])
            assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("module", sorted(set(MODULES) - {"medsagan.__main__"}))  # __main__ runs the CLI
def test_each_module_imports_on_its_own(module):
    loaded = {name: sys.modules.pop(name) for name in list(sys.modules) if name.split(".")[0] == "medsagan"}
    try:
        importlib.import_module(module)
    finally:
        for name in [n for n in sys.modules if n.split(".")[0] == "medsagan"]:
            del sys.modules[name]
        sys.modules.update(loaded)
