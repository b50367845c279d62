"""Writes that a forecast's answer need not wait for: the cache entry and the live-accuracy record.

Neither is part of what the answer claims (a lost cache entry costs a recomputation, a lost record
one scored forecast), so an uncached forecast answers as soon as it is rendered and these Redis
round trips happen after it. The tasks are kept here, not fire-and-forget: a reference keeps them
from being garbage-collected mid-flight, a failure is logged instead of vanishing, and shutdown
waits for them (:meth:`drain`) before the Redis connections close.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("service.background")


class BackgroundWrites:
    """A set of running after-the-answer tasks, drained at shutdown."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, work: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[Any]:
        """Run ``work`` on the event loop now, without the caller awaiting it."""
        task = asyncio.get_running_loop().create_task(work, name=f"himnet-{what}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("background %s failed: %r", task.get_name(), task.exception())

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait for every pending write (shutdown); cancel what is still running after that."""
        if not self._tasks:
            return
        pending = set(self._tasks)
        _, late = await asyncio.wait(pending, timeout=timeout_s)
        for task in late:
            task.cancel()
        if late:
            log.warning("shutdown: %d background write(s) cancelled after %.1f s", len(late),
                        timeout_s)
            await asyncio.gather(*late, return_exceptions=True)
