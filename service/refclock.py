"""The service's reference time: the wall clock, or in replay mode the newest reading.

Retention ("too old"), the buffer's expiry and the live-accuracy windows are judged against
"now". Live, now is the wall clock. A replay streams past days (their time of day and day of
week kept, see ``replay/timeline.py``) faster than real time, so in replay mode
(``HIMNET_REPLAY_MODE``) now is the end of the newest slot this replica has written or read:
retention counts back from the newest reading and a key lives as long after its write, in
wall time, as its slot lies before that newest end. "In the future" stays judged against the
wall clock (replayed data lies in the past). With nothing seen yet, a replay accepts any slot
that is not in the future.
"""

from __future__ import annotations

import time


class ReferenceClock:
    """``now()``: the wall clock, or the newest seen slot's end in replay mode."""

    def __init__(self, interval_s: int, replay: bool = False) -> None:
        self.interval_s = interval_s
        self.replay = replay
        self.newest_slot: int | None = None

    def observe(self, slot: int | None) -> None:
        """A slot was written or read as the newest; replay mode moves its clock forward."""
        if slot is not None and (self.newest_slot is None or slot > self.newest_slot):
            self.newest_slot = slot

    def now(self, wall: float | None = None) -> float:
        """The reference time (epoch seconds) at wall time ``wall`` (default: the clock)."""
        wall = time.time() if wall is None else wall
        if not self.replay:
            return wall
        if self.newest_slot is None:
            return float("inf")  # nothing seen: retention refuses nothing
        return float((self.newest_slot + 1) * self.interval_s)

    def wall_deadline(self, reference_epoch: float) -> float:
        """The wall time at which the reference clock reaches ``reference_epoch``.

        Live this is ``reference_epoch`` itself; in replay mode it is as far after the wall
        clock as ``reference_epoch`` lies after the newest slot's end.
        """
        if not self.replay:
            return reference_epoch
        wall = time.time()
        ref = self.now(wall)
        return reference_epoch if ref == float("inf") else wall + (reference_epoch - ref)
