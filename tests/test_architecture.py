"""The shape of the code: shared/ in layers that never import upwards, no import cycles, and
apps found only through their specs (shared/apps.py)."""

import ast
from pathlib import Path

from tests.conftest import REPO

# Lower layers first. A module may import its own package and any lower layer, never a higher one
# or a sibling package of its own layer.
LAYERS = [
    ["shared.errors", "shared.timing"],
    ["shared.data", "shared.inputs", "shared.models"],
    ["shared.inference"],
    ["shared.training", "shared.bench", "shared.contract"],
    ["shared.apps"],
    ["shared.serving"],
]
RANK = {package: rank for rank, packages in enumerate(LAYERS) for package in packages}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for top in ("apps", "shared") for p in (REPO / top).rglob("*.py")}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The project modules `path` imports at any depth of its code (function-level imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def package_of(module: str) -> str:
    return next((p for p in sorted(RANK, key=len, reverse=True) if module == p or module.startswith(p + ".")), "")


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(path, set(known)) - {name} for name, path in known.items()}


def test_no_lower_layer_imports_a_higher_one():
    wrong = []
    for module, imported in graph().items():
        if not module.startswith("shared."):
            continue
        assert package_of(module), f"{module} belongs to no layer: add its package to LAYERS"
        for target in imported:
            if target.startswith("apps"):
                wrong.append(f"{module} imports {target}: shared code finds apps only through shared/apps.py")
                continue
            if not target.startswith("shared.") or package_of(target) in ("", package_of(module)):
                continue
            if RANK[package_of(target)] >= RANK[package_of(module)]:
                wrong.append(f"{module} (layer {RANK[package_of(module)]}) imports {target} "
                             f"(layer {RANK[package_of(target)]})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    edges = graph()
    state, cycles = {}, []

    def visit(module, path):
        state[module] = "open"
        for target in sorted(edges.get(module, ())):
            if state.get(target) == "open":
                cycles.append(" -> ".join([*path[path.index(target):], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def test_shared_names_apps_in_one_place():
    """Only the discovery module imports apps, dynamically; no string names an app module elsewhere."""
    for path in (REPO / "shared").rglob("*.py"):
        if path.name == "apps.py" and path.parent.name == "shared":
            continue
        assert '"apps.' not in path.read_text() and "'apps." not in path.read_text(), path


def test_the_layers_are_folders_a_newcomer_can_read():
    folders = {p.name for p in (REPO / "shared").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == {"models", "inputs", "inference", "serving", "data"}
