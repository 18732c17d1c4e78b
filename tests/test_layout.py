"""The house rules of the layout, read from the source: the kernel imports no component, no
component imports the wiring, and no module imports itself back through others."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KERNEL = "cityvitals"
COMPONENTS = ("ingest", "streams", "sinks", "device_registry")
PURE = "rules"
WIRING = "wiring"
PACKAGES = (KERNEL, PURE, *COMPONENTS, WIRING)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Every project module and the project modules it imports when it runs, at the top or in
    a function."""
    graph: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = module_name(path)
            found: set[str] = set()
            tree = ast.parse(path.read_text(), str(path))
            typing_only = {  # imports for type checkers only never run
                id(inner)
                for node in ast.walk(tree)
                if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")
                for inner in ast.walk(node)
            }
            for node in ast.walk(tree):
                if id(node) in typing_only:
                    continue
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    found.add(node.module)
                    found.update(f"{node.module}.{a.name}" for a in node.names)
                elif isinstance(node, ast.Import):
                    found.update(a.name for a in node.names)
            graph[name] = found
    return {m: {i for i in found if i in graph and i != m} for m, found in graph.items()}


def package_of(module: str) -> str:
    return module.split(".")[0]


def test_the_kernel_imports_no_component_and_the_components_not_the_wiring() -> None:
    allowed = {
        KERNEL: {KERNEL},
        PURE: {KERNEL, PURE},
        **{c: {KERNEL, PURE, *COMPONENTS} for c in COMPONENTS},
        WIRING: set(PACKAGES),
    }
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in imports().items()
        for target in targets
        if package_of(target) not in allowed[package_of(module)]
    )
    assert wrong == []


def test_no_component_reaches_into_another_past_its_public_modules() -> None:
    """A component uses another only through its package root (``from sinks import X``)."""
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in imports().items()
        if package_of(module) in COMPONENTS
        for target in targets
        if package_of(target) in COMPONENTS
        and package_of(target) != package_of(module)
        and "." in target
        and target.split(".")[1] not in {"vitals"}  # sinks.vitals: the reads of sinks' tables
    )
    assert wrong == []


def test_no_module_imports_itself_back() -> None:
    graph = imports()
    # Importing a package's __init__ to reach a submodule is not a use of the __init__.
    edges = {m: {t for t in ts if not m.startswith(f"{t}.")} for m, ts in graph.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges[module]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert cycles == []
