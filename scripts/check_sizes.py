"""List Python functions over 60 lines and modules over 400 lines (outside tests/ by default).

    python scripts/check_sizes.py [--all]   # --all: tests/ too
The developers' guide: modules <= 400 lines, functions <= 60 lines (benchmarks' ``main`` may be
longer when split into named phases).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

MAX_FUNCTION, MAX_MODULE = 60, 400


def tracked_python(root: Path, with_tests: bool) -> list[Path]:
    names = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
                           cwd=root, check=True, capture_output=True, text=True).stdout.split()
    return [root / n for n in names if (root / n).is_file() and (with_tests or not n.startswith("tests/"))]


def long_functions(path: Path) -> list[tuple[str, int, int]]:
    """(qualified name, first line, length) of every function longer than MAX_FUNCTION."""
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([d.lineno for d in child.decorator_list] + [child.lineno])
                length = child.end_lineno - start + 1
                if length > MAX_FUNCTION:
                    found.append((prefix + child.name, child.lineno, length))
                visit(child, prefix + child.name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")

    visit(ast.parse(path.read_text(encoding="utf-8")), "")
    return found


def main(argv: list[str]) -> int:
    root = Path(__file__).resolve().parents[1]
    problems = 0
    for path in tracked_python(root, "--all" in argv):
        rel = path.relative_to(root)
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE:
            print(f"{rel}: module of {lines} lines")
            problems += 1
        for name, line, length in long_functions(path):
            print(f"{rel}:{line}: {name} is {length} lines")
            problems += 1
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
