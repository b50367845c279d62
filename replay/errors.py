"""The replay's one error type."""

from __future__ import annotations


class ReplayError(RuntimeError):
    """The replay cannot start or cannot go on; the message says why. ``exit_code``: what
    ``himnet replay`` exits with (1: the run failed; 2: the input was wrong)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code
