"""Who may import what (docs/architecture.md), checked on the source: an AST scan of every import
statement in the tracked Python files, including imports inside functions."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROJECT = ("model", "training", "studies", "replay", "himnet", "service", "tests", "benchmarks")


def python_files(room: str) -> list[Path]:
    names = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
                           cwd=REPO, check=True, capture_output=True, text=True).stdout.split()
    return [REPO / n for n in names if (REPO / n).is_file() and (room == "*" or n.startswith(room + "/"))]


def imports(path: Path) -> set[str]:
    """Dotted names of every module ``path`` imports (``from a.b import c`` gives a.b and a.b.c)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom):  # relative: the layering rules assume absolute imports
            found.add("." * node.level + (node.module or ""))
    return found


def offending(room: str, allowed: callable) -> list[str]:
    """``file: module`` for every project (or torch) import in ``room`` that ``allowed`` refuses."""
    bad = []
    for path in python_files(room):
        for name in sorted(imports(path)):
            top = name.split(".")[0]
            if (top in PROJECT or top == "torch" or name.startswith(".")) and not allowed(name, path):
                bad.append(f"{path.relative_to(REPO)}: {name}")
    return bad


def within(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def test_the_scan_sees_imports_inside_functions(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    import torch\n    from training.datasets import load_dataset\n")
    assert {"torch", "training.datasets", "training.datasets.load_dataset"} <= imports(probe)


def test_relative_imports_are_not_used() -> None:
    assert offending("*", lambda name, path: not name.startswith(".")) == []


def test_service_imports_no_offline_room() -> None:
    assert offending("service", lambda name, path: within(name, "service", "model") or
                     name.split(".")[0] not in PROJECT) == []


def test_model_imports_nothing_of_the_project_outside_model() -> None:
    assert offending("model", lambda name, path: within(name, "model", "torch")) == []


def test_replay_imports_no_torch_and_of_training_only_the_readers() -> None:
    """It runs beside the service, with the service's dependencies and what the readers need."""
    def allowed(name: str, path: Path) -> bool:
        return within(name, "replay", "training.datasets", "himnet.args") or name in ("training", "himnet")

    assert offending("replay", allowed) == []


def test_training_imports_neither_studies_replay_nor_service() -> None:
    def allowed(name: str, path: Path) -> bool:
        return within(name, "training", "model", "torch", "himnet.args") or name == "himnet"

    assert offending("training", allowed) == []


def test_studies_import_no_service_and_no_dispatcher() -> None:
    def allowed(name: str, path: Path) -> bool:
        return within(name, "studies", "training", "model", "torch", "himnet.args") or name == "himnet"

    assert offending("studies", allowed) == []


def test_nothing_outside_tests_imports_tests() -> None:
    bad = [f"{p.relative_to(REPO)}: {n}" for p in python_files("*") if not p.is_relative_to(REPO / "tests")
           for n in imports(p) if within(n, "tests")]
    assert bad == []


@pytest.mark.parametrize("module", ["replay", "replay.cli", "replay.__main__"])
def test_replay_imports_without_torch(module: str) -> None:
    """Blocking torch makes any import of it fail: the replay (and its command line) must not need it."""
    code = (f"import sys; sys.modules['torch'] = None; sys.argv = ['replay', '--help']\n"
            f"try:\n    import {module}\nexcept SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
            "assert not any(m.startswith(('studies', 'training.train', 'training.loop')) for m in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
