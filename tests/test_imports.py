"""samtune's own modules import each other at the top, without circles.

Read from the source with ``ast`` (no module is executed): a function-local ``import samtune...``
is allowed only where :data:`LOCAL_IMPORTS` gives the reason, and the graph of module-level
imports between samtune modules has no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import REPO

PACKAGE = REPO / "samtune"

# (file, imported module) -> why the import stays inside a function.
LOCAL_IMPORTS = {
    ("samtune/__init__.py", "samtune.inference.predictor"): (
        "`import samtune` stays light (no torch, sam2 or Lightning) for the two re-exported loaders"
    ),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(node: ast.Import | ast.ImportFrom, modules: dict[str, Path]) -> list[str]:
    """The samtune modules an import statement loads (a ``from`` import of a submodule counts
    as the submodule)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "samtune"]
    if node.level or not node.module or node.module.split(".")[0] != "samtune":
        return []
    found = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules]
    return found if len(found) == len(node.names) else [node.module, *found]


def loaded_with(target: str, importer: str) -> list[str]:
    """``target`` and the packages above it that importing it runs, except the importer's own
    packages (those are already being imported when the importer runs)."""
    parts = target.split(".")
    own = {".".join(importer.split(".")[:i]) for i in range(1, importer.count(".") + 2)}
    chain = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return [m for m in chain if m not in own]


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def split_imports(tree: ast.Module) -> tuple[list[ast.stmt], list[ast.stmt]]:
    """(imports run when the module is imported, imports inside function bodies)."""
    top: list[ast.stmt] = []
    local: list[ast.stmt] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and is_type_checking(child):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                (local if in_function else top).append(child)
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            visit(child, inner)

    visit(tree, False)
    return top, local


def parsed() -> dict[str, tuple[Path, list[ast.stmt], list[ast.stmt]]]:
    modules = all_modules()
    result = {}
    for name, path in modules.items():
        top, local = split_imports(ast.parse(path.read_text(), filename=str(path)))
        result[name] = (path, top, local)
    return result


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """One cycle of ``graph`` (node -> nodes it imports) as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        stack.append(name)
        for target in graph.get(name, []):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[name] = 2
        return None

    for name in graph:
        if name not in state and (cycle := visit(name)):
            return cycle
    return None


def test_samtune_imports_are_at_the_top_unless_listed_with_a_reason():
    modules = all_modules()
    found = {}
    for path, _, local in parsed().values():
        rel = path.relative_to(REPO).as_posix()
        for node in local:
            for target in imported_modules(node, modules):
                found.setdefault((rel, target), node.lineno)
    unlisted = {key: line for key, line in found.items() if key not in LOCAL_IMPORTS}
    assert not unlisted, "function-local samtune imports: " + ", ".join(
        f"{file}:{line} imports {target}" for (file, target), line in sorted(unlisted.items())
    )
    stale = set(LOCAL_IMPORTS) - set(found)
    assert not stale, f"allowed local imports that no longer exist: {sorted(stale)}"
    assert all(reason.strip() for reason in LOCAL_IMPORTS.values())


def test_module_level_imports_have_no_cycle():
    modules = all_modules()
    graph = {
        name: sorted(
            {
                dep
                for node in top
                for target in imported_modules(node, modules)
                for dep in loaded_with(target, name)
                if dep in modules
            }
        )
        for name, (_, top, _) in parsed().items()
    }
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checks_see_what_they_look_for():
    """The parser finds local imports and ignores TYPE_CHECKING; the cycle search finds cycles."""
    source = (
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "from samtune.models import build\n"
        "if TYPE_CHECKING:\n"
        "    from samtune.training.module import SamTuneModule\n"
        "def f():\n"
        "    import samtune.data.io\n"
        "    class C:\n"
        "        def g(self):\n"
        "            from samtune.inference.predictor import load_predictor\n"
    )
    modules = all_modules()
    top, local = split_imports(ast.parse(source))
    assert [t for n in top for t in imported_modules(n, modules)] == ["samtune.models.build"]
    assert [t for n in local for t in imported_modules(n, modules)] == [
        "samtune.data.io",
        "samtune.inference.predictor",
    ]
    assert loaded_with("samtune.models.build", "samtune.inference.predictor") == [
        "samtune.models",
        "samtune.models.build",
    ]
    assert loaded_with("samtune.models.registry", "samtune.models.build") == [
        "samtune.models.registry"
    ]
    assert find_cycle({"a": ["b"], "b": ["c"], "c": []}) is None
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"], "d": []}) == ["a", "b", "c", "a"]
