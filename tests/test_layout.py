"""The package's shape (README, "How it works"): data flows down from the fronts to the backends, with
no import cycle, function-level and importlib imports included; the backends and the torch glue never
import a front; the CPU backend never imports torch; modules stay short enough to read."""

import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "nbops")
FRONTS = {f"nbops.{name}" for name in ("pooling", "conv", "roi", "activation", "reshape", "normalization", "loss")}


def _modules() -> dict:
    """nbops module name -> its source file."""
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for file in files:
            if file.endswith(".py"):
                path = os.path.join(folder, file)
                parts = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: str) -> set:
    """Every nbops module (and 'torch') that the file imports anywhere: at module level, inside
    functions, and through importlib.import_module (an f-string names every module under its prefix).
    The implicit import of a parent package is not counted."""
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found = set()

    def add(target):
        if target.split(".")[0] == "torch":
            found.add("torch")
        elif target in MODULES:
            found.add(target)

    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if not name.startswith(base + "."):  # (`from . import x` names the parent package itself)
                add(base)
            for alias in node.names:
                add(f"{base}.{alias.name}")
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            argument = node.args[0]
            if isinstance(argument, ast.Constant):
                add(argument.value)
            elif isinstance(argument, ast.JoinedStr) and isinstance(argument.values[0], ast.Constant):
                prefix = argument.values[0].value
                found.update(module for module in MODULES if module.startswith(prefix))
    found.discard(name)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def test_the_graph_sees_dynamic_and_function_level_imports():
    assert {"nbops.cpu.conv", "nbops.cuda.conv"} <= GRAPH["nbops._dispatch"]  # importlib, f-string
    assert "nbops.autograd" in GRAPH["nbops._dispatch"]  # inside a function


def test_no_import_cycle():
    state = {}

    def visit(module, path):
        state[module] = "open"
        for target in sorted(GRAPH.get(module, ())):
            if state.get(target) == "open":
                cycle = path[path.index(target):] + [target] if target in path else path + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state and target != "torch":
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith(("nbops.cpu", "nbops.cuda")) or m == "nbops.autograd"))
def test_backends_and_glue_never_import_a_front(module):
    fronts = GRAPH[module] & (FRONTS | {"nbops", "nbops.functional", "nbops.nn", "nbops._dispatch"})
    assert not fronts, f"{module} imports {sorted(fronts)}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("nbops.cpu")))
def test_cpu_backend_never_imports_torch(module):
    assert "torch" not in GRAPH[module]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_short(module):
    lines = sum(1 for _ in open(MODULES[module]))
    assert lines <= 650, f"{module} has {lines} lines: split it (the layout aims at about 600 at most)"
