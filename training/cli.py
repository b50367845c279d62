"""``himnet``: one entry point for the offline work (train, evaluate, export, ...).

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("training.train", "train HimNet on a dataset and write a checkpoint"),
    "evaluate": ("training.evaluate", "evaluate a checkpoint against baselines on the test split"),
    "export": ("training.export", "export a checkpoint to a model bundle (ONNX + TorchScript)"),
    "replay": ("training.replay", "stream a dataset into a running service; online accuracy per horizon"),
    "report": ("training.report", "figures and a summary of what a model learned: clusters, time, graph"),
    "efficiency": ("training.efficiency", "parameters, step/epoch time, latency and memory vs the naive form; HimNet-Θ′ size"),
    "ablation": ("training.ablation", "train the full model and its six ablation variants; per-horizon table"),
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
