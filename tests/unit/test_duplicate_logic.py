"""No block of six or more lines of logic appears twice in ``src/`` (declarations aside).

A twin is two places that must change together; one of them is forgotten. The detector
below is small on purpose, so a failure is easy to read:

1. Each module is parsed; its *declaration* lines are set aside: docstrings and other
   bare strings, imports, decorators, ``def``/``class`` headers with their parameter
   lists, ``...`` bodies, ``__all__``, and assignments made directly in a module or
   class body (constants, settings fields, model fields). What is left is logic.
2. Each logical line left (a statement wrapped over several lines is one) is
   normalised: its tokens joined by one space, comments dropped, so indentation,
   wrapping and comments never hide a twin.
3. Every window of ``WINDOW`` consecutive lines of logic of a module is compared with
   every other; the same window in two places (two modules, or two non-overlapping
   places of one module) is a twin, reported as ``file:first-last`` pairs.

Lines that only look alike (other names, same shape) are not twins here: that is a
judgement (the workplace tool ``duplicates`` shows them too), not a check.
"""

from __future__ import annotations

import ast
import io
import textwrap
import tokenize
from collections import defaultdict
from pathlib import Path

import redundancy

SRC = Path(redundancy.__file__).parent
WINDOW = 6
"""Lines of logic a block must share to count as a twin."""

SKIPPED_TOKENS = {
    tokenize.COMMENT,
    tokenize.NL,
    tokenize.NEWLINE,
    tokenize.INDENT,
    tokenize.DEDENT,
    tokenize.ENDMARKER,
}

Place = tuple[str, int, int]
"""A window: module (relative to ``src/redundancy``), first and last line."""


def declaration_lines(tree: ast.Module) -> set[int]:
    """First lines of the statements of ``tree`` that declare rather than compute."""
    lines: set[int] = set()

    def visit(body: list[ast.stmt], *, declarative: bool) -> None:
        for stmt in body:
            bare_string = isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
            imported = isinstance(stmt, ast.Import | ast.ImportFrom)
            declared = declarative and isinstance(stmt, ast.Assign | ast.AnnAssign)
            if imported or bare_string or declared:
                lines.add(stmt.lineno)
            elif isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                lines.update(decorator.lineno for decorator in stmt.decorator_list)
                lines.add(stmt.lineno)  # the header, parameters included
                visit(stmt.body, declarative=isinstance(stmt, ast.ClassDef))
            else:
                for block in _blocks(stmt):
                    visit(block, declarative=declarative)

    visit(tree.body, declarative=True)
    return lines


def _blocks(stmt: ast.stmt) -> list[list[ast.stmt]]:
    """The statement lists nested in ``stmt`` (if/for/while/with/try/match bodies)."""
    found = [getattr(stmt, name, []) for name in ("body", "orelse", "finalbody")]
    found += [handler.body for handler in getattr(stmt, "handlers", [])]
    found += [case.body for case in getattr(stmt, "cases", [])]
    return [block for block in found if block and isinstance(block[0], ast.stmt)]


def logic_lines(source: str) -> list[tuple[int, str]]:
    """``(first line, normalised text)`` of every logical line of logic in ``source``:
    a statement wrapped over several lines is one line here."""
    skipped = declaration_lines(ast.parse(source))
    found: list[tuple[int, str]] = []
    parts: list[str] = []
    first = 0
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.NEWLINE:
            text = " ".join(parts)
            if first not in skipped:
                found.append((first, text))
            parts = []
        elif token.type not in SKIPPED_TOKENS:
            if not parts:
                first = token.start[0]
            parts.append(token.string)
    return found


def twins(modules: dict[str, str], window: int = WINDOW) -> list[tuple[Place, Place]]:
    """Every pair of places in ``modules`` (name -> source) sharing ``window`` or more
    consecutive lines of logic; a longer shared run is one pair, as long as the run."""
    lines = {name: logic_lines(source) for name, source in sorted(modules.items())}
    seen: dict[tuple[str, ...], list[tuple[str, int]]] = defaultdict(list)
    for name, found in lines.items():
        for start in range(len(found) - window + 1):
            seen[tuple(text for _, text in found[start : start + window])].append((name, start))
    shared: set[tuple[str, int, str, int]] = set()  # (module, window, module, window)
    for places in seen.values():
        for i, (first, at) in enumerate(places):
            for second, other in places[i + 1 :]:
                if first != second or other >= at + window:  # not a run overlapping itself
                    shared.add((first, at, second, other))

    def place(name: str, start: int, end: int) -> Place:
        return (name, lines[name][start][0], lines[name][end + window - 1][0])

    pairs: list[tuple[Place, Place]] = []
    for first, at, second, other in sorted(shared):
        if (first, at - 1, second, other - 1) in shared:
            continue  # inside a run that starts earlier
        length = 0
        while (first, at + length + 1, second, other + length + 1) in shared:
            length += 1
        pairs.append((place(first, at, at + length), place(second, other, other + length)))
    return pairs


def _describe(pairs: list[tuple[Place, Place]]) -> list[str]:
    return [f"{a[0]}:{a[1]}-{a[2]} ~ {b[0]}:{b[1]}-{b[2]}" for a, b in pairs]


def test_no_block_of_logic_appears_twice_in_the_package():
    # Given every module of the package
    modules = {str(p.relative_to(SRC)): p.read_text() for p in sorted(SRC.rglob("*.py"))}
    # When their lines of logic are compared six at a time
    found = _describe(twins(modules))
    # Then no block stands in two places (merge the twins listed into one helper)
    assert not found, "blocks of logic written twice:\n" + "\n".join(found)


def test_the_detector_finds_a_twin_through_comments_wrapping_and_declarations():
    # Given two modules sharing six lines of logic but for one name, written differently:
    # another indentation, a wrapped call, comments, and declarations around them
    first = """
        def count(client, key, ttl):
            pipe = client.pipeline(transaction=False)
            pipe.incr(key)  # one trip
            pipe.expire(key, ttl)
            count, _ = pipe.execute()
            log.debug("counted %s", key)
            return int(count)
    """
    second = """
        LIMIT: int = 5

        class Counter:
            name: str = "counter"

            def count(self, key: str) -> int:
                \"\"\"Count.\"\"\"
                # INCR and EXPIRE
                pipe = self.client.pipeline(
                    transaction=False
                )
                pipe.incr(key)
                pipe.expire(key, ttl)
                count, _ = pipe.execute()

                log.debug("counted %s", key)
                return int(count)
    """
    modules = {"a.py": textwrap.dedent(first), "b.py": textwrap.dedent(second)}
    # When the detector compares them, then five common lines are no twin ...
    assert twins(modules) == []
    # ... and when the one name is the same too, the six lines are one
    modules["a.py"] = modules["a.py"].replace("client.pipeline", "self.client.pipeline")
    assert _describe(twins(modules)) == ["a.py:3-8 ~ b.py:10-18"]


def test_declarations_alone_are_not_twins():
    # Given two modules whose only common lines are declarations: imports, __all__,
    # constants, fields, decorators, signatures and docstrings
    declarations = '''
        """A module."""
        from typing import Any
        import json

        __all__ = ["a", "b", "c", "d", "e", "f"]
        A = 1
        B: int = 2

        class Model:
            """Fields."""
            first: int = 0
            second: str = ""
            third: float = 0.0

        @decorate(name="x")
        def task(
            batch_id: str,
            *,
            count: int,
            threshold: float,
        ) -> dict[str, Any]: ...

        class Store(Protocol):
            def get(self, key: str) -> bytes: ...
            def put(self, key: str, value: bytes) -> None: ...
    '''
    source = textwrap.dedent(declarations)
    # When the detector compares two copies
    found = twins({"a.py": source, "b.py": source})
    # Then it finds no logic to share
    assert logic_lines(source) == []
    assert found == []
