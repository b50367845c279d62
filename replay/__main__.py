"""``python -m replay ...``: ``himnet replay`` without the other commands (no torch needed)."""

import argparse
import sys

from himnet.args import HelpFormatter, run_command
from replay import cli

parser = argparse.ArgumentParser(prog="himnet replay", formatter_class=HelpFormatter)
cli.add_arguments(parser)
sys.exit(run_command("replay", cli, parser.parse_args()))
