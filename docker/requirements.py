"""Print the pip requirements of one image flavour, read from pyproject.toml (one source of truth).

    python docker/requirements.py service       # base dependencies: the CPU service
    python docker/requirements.py service-gpu   # base dependencies, onnxruntime -> the `gpu` extra
    python docker/requirements.py train         # base dependencies + the `train` extra
    python docker/requirements.py dev           # train + the `dev` extra: CI and developers

scripts/lock.sh resolves each list into a hashed lock file under requirements/ (what the images
and scripts/setup.sh install).

Both onnxruntime wheels install the same `onnxruntime` package, so the GPU flavour must not list
the CPU one: pip would install both and whichever came last would win.
Standard library only (it runs before anything is installed).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

FLAVOURS = ("service", "service-gpu", "train", "dev")


def _name(requirement: str) -> str:
    """The normalised project name of a PEP 508 requirement string."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def requirements(flavour: str, pyproject: Path) -> list[str]:
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown flavour {flavour!r}; choose one of {', '.join(FLAVOURS)}")
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    base: list[str] = list(project["dependencies"])
    extras: dict[str, list[str]] = project.get("optional-dependencies", {})
    own = _name(project["name"])
    if flavour == "service":
        out = base
    elif flavour == "service-gpu":
        gpu = extras["gpu"]
        if not any(_name(r) == "onnxruntime-gpu" for r in gpu):
            raise ValueError("the `gpu` extra does not name onnxruntime-gpu")
        out = [r for r in base if _name(r) != "onnxruntime"] + gpu
    else:
        out = base + [r for r in extras["train"] if _name(r) != own]
        if flavour == "dev":
            out += [r for r in extras["dev"] if _name(r) != own]
    seen: set[str] = set()
    unique = []
    for r in out:
        if _name(r) not in seen:
            seen.add(_name(r))
            unique.append(r.strip())
    return unique


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2):
        print(__doc__, file=sys.stderr)
        return 2
    pyproject = Path(argv[1]) if len(argv) == 2 else Path(__file__).resolve().parents[1] / "pyproject.toml"
    try:
        lines = requirements(argv[0], pyproject)
    except (OSError, KeyError, ValueError) as exc:
        print(f"requirements: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
