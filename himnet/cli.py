"""``himnet``: one entry point for the offline work (train, evaluate, export, ...).

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``,
and optionally ``USER_ERRORS``: the exception types that mean "the user's input is wrong".
:func:`main` is the one place that reports those (and :class:`himnet.args.UserError`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

from himnet.args import UserError

COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("training.train", "train HimNet on a dataset and write a checkpoint"),
    "evaluate": ("training.evaluate", "evaluate a checkpoint against baselines on the test split"),
    "export": ("training.export", "export a checkpoint to a model bundle (ONNX + TorchScript)"),
    "replay": ("replay.cli", "stream a dataset into a running service; online accuracy per horizon"),
    "report": ("studies.report", "figures and a summary of what a model learned: clusters, time, graph"),
    "efficiency": ("studies.efficiency", "parameters, step/epoch time, latency and memory vs the naive form; HimNet-Θ′ size"),
    "ablation": ("studies.ablation", "train the full model and its six ablation variants; per-horizon table"),
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown in each option's help (unless unset: None / off); examples in the epilog keep
    their line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="himnet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    return parser


def run_command(command: str, module: ModuleType, args: argparse.Namespace) -> int:
    """Run one command; a user error becomes ``himnet <command>: <message>`` on stderr and its exit
    code (2 unless the error names another), never a traceback."""
    user_errors: tuple[type[BaseException], ...] = (UserError, *getattr(module, "USER_ERRORS", ()))
    try:
        return int(module.run(args) or 0)
    except user_errors as exc:
        print(f"himnet {command}: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 2))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(args.command, importlib.import_module(args._module), args)


if __name__ == "__main__":
    sys.exit(main())
