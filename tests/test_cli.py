"""``himnet <command> --help``: every command builds its parser, examples keep their lines, and
defaults are shown only where there is one."""

from __future__ import annotations

import pytest

from himnet.cli import COMMANDS, main


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_of_every_command(command, capsys):
    with pytest.raises(SystemExit, match="^0$") as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: himnet {command}")
    assert "(default: None)" not in out and "(default: False)" not in out


def test_examples_keep_their_line_breaks(capsys):
    with pytest.raises(SystemExit, match="^0$"):  # --help exits 0
        main(["train", "--help"])
    lines = capsys.readouterr().out.splitlines()
    examples = [line.strip() for line in lines if "himnet train --" in line and "usage" not in line]
    assert examples[:3] == ["examples:  himnet train --epochs 5 --hidden 16        (synthetic data)",
                            "himnet train --preset metr-la --data metr-la.h5 --output runs/metr-la",
                            "himnet train --data los-loop --split los-loop --output runs/los"]
