"""Who imports whom: the batch package imports in one order with nothing deferred (so no
cycle), and the pure core imports only what it may (read from the source, so no import
order can hide a cycle)."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import redundancy

PACKAGE = Path(redundancy.__file__).parent
CORE_MAY_IMPORT = {"numpy", "rapidfuzz", "pydantic"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(tree: ast.AST) -> list[tuple[str, ast.AST]]:
    """Every imported module (``from a import b`` gives ``a`` and ``a.b``), with its node."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, node))
            found += [(f"{node.module}.{alias.name}", node) for alias in node.names]
    return found


def nested_imports(tree: ast.Module) -> list[int]:
    """Lines of imports inside a function or class body (imports deferred to run time)."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            lines += [
                inner.lineno
                for inner in ast.walk(node)
                if isinstance(inner, ast.Import | ast.ImportFrom)
            ]
    return lines


def parsed(folder: str) -> dict[str, ast.Module]:
    return {
        module_name(path): ast.parse(path.read_text(), str(path))
        for path in sorted((PACKAGE / folder).glob("*.py"))
    }


def documented_order() -> list[str]:
    """The modules as the package docstring lists them, in import order."""
    import redundancy.batch

    listing = (redundancy.batch.__doc__ or "").split("Modules in import order")[1]
    return [f"redundancy.batch.{m}" for m in re.findall(r"^    (\w+)  ", listing, re.MULTILINE)]


def test_the_batch_package_imports_in_its_documented_order_with_nothing_deferred():
    # Given every module of redundancy.batch and the order its docstring gives
    modules = parsed("batch")
    order = documented_order()
    assert sorted(order) == sorted(set(modules) - {"redundancy.batch"})
    # When their imports are read
    uses = {
        name: {target for target, _ in imports(tree) if target in modules and target != name}
        for name, tree in modules.items()
        if name != "redundancy.batch"
    }
    deferred = {
        name: lines
        for name, tree in modules.items()
        # the one exception: the Redis client is imported where it is built, so the
        # embedded default never needs redis (store.RedisJobStore)
        if (lines := [n for n in nested_imports(tree) if name != "redundancy.batch.store"])
    }
    upward = {
        name: sorted(
            {t for t, _ in imports(tree) if t.startswith(("redundancy.tasks", "redundancy.cli"))}
        )
        for name, tree in modules.items()
    }
    # Then each module uses only modules listed before it (so there is no cycle), defers
    # no import, and none imports the layers above the package
    misplaced = {
        name: sorted(used - set(order[: order.index(name)])) for name, used in uses.items()
    }
    assert {name: later for name, later in misplaced.items() if later} == {}
    assert uses["redundancy.batch.canvas"]  # (the check has something to check)
    assert deferred == {}
    assert all(not found for found in upward.values()), upward


def test_the_core_imports_only_the_standard_library_numpy_rapidfuzz_and_pydantic():
    # Given every module of redundancy.core (lsh_tables included, which __init__ skips)
    modules = parsed("core")
    assert "redundancy.core.lsh_tables" in modules
    # When the top-level package of each import is read
    outside = {
        name: sorted(
            {
                target
                for target, _ in imports(tree)
                if target.split(".")[0] not in sys.stdlib_module_names | CORE_MAY_IMPORT
                and not target.startswith(("redundancy.core", "redundancy.errors"))
            }
        )
        for name, tree in modules.items()
    }
    # Then nothing else is imported: no I/O library, no other layer of ours
    assert {name: found for name, found in outside.items() if found} == {}
