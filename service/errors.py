"""Domain errors: what the service's own layers raise, free of HTTP.

The write path, the forecaster and the input rules raise these; ``service/problems.py`` is the
one place that turns each kind (and :class:`~service.buffer.BufferUnavailable`,
:class:`~service.inference.Overloaded`) into a problem+json answer with its status code.
"""

from __future__ import annotations

from typing import Any

MAX_LISTED = 50  # a refusal lists at most this many items of a kind, and counts all of them


class ServiceError(Exception):
    """A refusal the caller can act on.

    ``slug`` names the kind (it becomes the problem type), ``detail`` says what is wrong and how
    to fix it, ``extra`` holds machine-readable members (e.g. the offending sensors).
    """

    def __init__(self, slug: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.slug = slug
        self.detail = detail
        self.extra = extra


class InvalidInput(ServiceError):
    """The request's content breaks a rule: nothing was stored or computed."""


class NotFound(ServiceError):
    """There is nothing to answer from (no readings, no such sensor)."""


class Conflict(ServiceError):
    """The request cannot be carried out in the service's current state (nothing changed)."""
