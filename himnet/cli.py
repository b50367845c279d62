"""``himnet``: one entry point for the offline work (train, evaluate, export, ...).

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``,
and optionally ``USER_ERRORS``: the exception types that mean "the user's input is wrong";
:func:`himnet.args.run_command` is the one place that reports those.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from himnet.args import HelpFormatter, run_command

COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("training.train", "train HimNet on a dataset and write a checkpoint"),
    "evaluate": ("training.evaluate", "evaluate a checkpoint against baselines on the test split"),
    "export": ("training.export", "export a checkpoint to a model bundle (ONNX + TorchScript)"),
    "ensemble": ("training.ensemble_export", "export K checkpoints trained with different seeds as one ensemble bundle"),
    "replay": ("replay.cli", "stream a dataset into a running service; online accuracy per horizon"),
    "report": ("studies.report", "figures and a summary of what a model learned: clusters, time, graph"),
    "efficiency": ("studies.efficiency", "parameters, step/epoch time, latency and memory vs the naive form; HimNet-Θ′ size"),
    "ablation": ("studies.ablation", "train the full model and its six ablation variants; per-horizon table"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="himnet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(args.command, importlib.import_module(args._module), args)


if __name__ == "__main__":
    sys.exit(main())
