"""Transitional: ``training.cli.main`` forwards to :func:`himnet.cli.main`, the dispatcher above the
rooms. Only ``tests/training/test_export.py`` (being edited on another branch) still imports it;
delete this file once that import names ``himnet.cli``."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from himnet.cli import main as dispatch  # lazy: training/ must not depend on the dispatcher

    return dispatch(argv)
