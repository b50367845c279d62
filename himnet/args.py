"""What every ``himnet`` command shares on the command line: argument types, ``--data-option``
parsing and :class:`UserError`, the one error the dispatcher reports.

A leaf module (standard library only): the commands in ``training/``, ``studies/`` and ``replay/``
import it to declare their options; nothing else of ``himnet`` is imported below the dispatcher.
:func:`run_command` is the one handler that reports user errors, for ``himnet`` and ``python -m replay``.
"""

from __future__ import annotations

import argparse
import sys
from types import ModuleType
from typing import Any


class UserError(Exception):
    """A mistake the user can fix (bad option, missing file): ``himnet`` prints
    ``himnet <command>: <message>`` and exits with ``exit_code``, no traceback."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def parse_data_options(pairs: list[str]) -> dict[str, Any]:
    """``["start=2012-03-01", "check_time=false"]`` -> reader options (``--data-option``)."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise UserError(f"--data-option expects KEY=VALUE, got {pair!r}", exit_code=1)
        key, value = pair.split("=", 1)
        low = value.strip().lower()
        # readers convert numbers themselves; flags must not stay truthy strings like "false"
        out[key.strip().replace("-", "_")] = {"true": True, "false": False, "none": None}.get(low, value)
    return out


def numbers_typed(options: dict[str, Any]) -> dict[str, Any]:
    """Reader options whose strings look like numbers become numbers (readers also cast)."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if not isinstance(value, str):
            out[key] = value
            continue
        try:
            out[key] = int(value)
        except ValueError:
            try:
                out[key] = float(value)
            except ValueError:
                out[key] = value
    return out


def int_list(text: str) -> tuple[int, ...]:
    """'8,0,16,16' or '8 0 16 16' -> (8, 0, 16, 16): list-valued command-line options."""
    return tuple(int(p) for p in text.replace(",", " ").split()) if text.strip() else ()


def embedding_dims(text: str) -> tuple[int, int, int, int]:
    """--embedding-dims: four non-negative sizes TOD,DOW,S,ST (argparse rejects anything else)."""
    try:
        dims = int_list(text)
    except ValueError:
        dims = ()
    if len(dims) != 4 or min(dims) < 0:
        raise argparse.ArgumentTypeError(f"needs four sizes TOD,DOW,S,ST (each >= 0), got {text!r}")
    return dims  # type: ignore[return-value]


def add_data_option(parser: argparse.ArgumentParser | Any, help_text: str = "reader option (repeatable)") -> None:
    """The repeatable ``--data-option KEY=VALUE`` every data-reading command takes."""
    parser.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE", help=help_text)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown in each option's help (unless unset: None / off); examples in the epilog keep
    their line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def run_command(command: str, module: ModuleType, args: argparse.Namespace) -> int:
    """Run one command; a user error becomes ``himnet <command>: <message>`` on stderr and its exit
    code (the error's, else the module's ``USER_ERROR_EXIT``, else 2), never a traceback."""
    user_errors: tuple[type[BaseException], ...] = (UserError, *getattr(module, "USER_ERRORS", ()))
    try:
        return int(module.run(args) or 0)
    except user_errors as exc:
        print(f"himnet {command}: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_code", getattr(module, "USER_ERROR_EXIT", 2)))
