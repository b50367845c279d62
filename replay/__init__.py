"""``himnet replay``: stream a dataset into a running service and measure online accuracy.

Talks to the service over HTTP only (httpx): ``GET /readyz``, ``GET /model``, ``GET /embeddings``,
``POST /readings`` (API key), ``POST /forecast``. Any dataset ``training.datasets`` loads works
(default: ``synthetic``).

Timeline (how dataset time becomes service time)
    The replayed rows keep the data's clock: they are shifted by whole weeks (whole days when
    the model does not use the day of week, ``GET /model`` ``day_of_week``) so that the LAST
    replayed row falls at or before the wall-clock slot in which it will be sent (the replay's
    projected end), in the model's time zone. Each row thus keeps its time of day (and weekday),
    which the service turns into the model's time features. Unless ``--start`` is given, the
    first row is chosen so that the last row has the projected end's weekday and time of day:
    then the shift is exact and, at speedup 1, the replay is a live feed. With ``--start`` the
    rows may lie up to a week in the past, and at speedup S row ``k`` of ``N`` is about
    ``(N-1-k) · interval`` old when sent: run the service in replay mode
    (``HIMNET_REPLAY_MODE=true``: retention judged against the newest reading, not the wall
    clock; ``service/refclock.py``) or with a retention that long.

Accuracy
    After each posted slot (every ``--forecast-every`` slots, once the input window is full) the
    replay asks ``POST /forecast`` with ``as_of`` = that slot and keeps the forecast. When the
    slot a horizon points at is posted later, its readings are the truth: MAE, RMSE and MAPE per
    horizon over the readings that are present (the dataset's missing value, 0, is skipped, as
    in training's masked metrics). Horizons whose truth lies beyond the replay stay unscored, and
    so do targets in the last ``grace_slots`` rows (the service's live-accuracy rule, read from
    ``GET /accuracy``): the replay's figures and the service's ``GET /accuracy`` score the same
    targets.
"""

from replay.accuracy import HorizonStats, OnlineAccuracy, format_report
from replay.cli import resolve_api_key
from replay.client import ModelInfo, ServiceClient
from replay.errors import ReplayError
from replay.stream import ReplayResult, column_mapping, replay
from replay.timeline import choose_start, iso_utc, keep_clock, projected_end_slot, rebase

__all__ = [
    "HorizonStats",
    "ModelInfo",
    "OnlineAccuracy",
    "ReplayError",
    "ReplayResult",
    "ServiceClient",
    "choose_start",
    "column_mapping",
    "format_report",
    "iso_utc",
    "keep_clock",
    "projected_end_slot",
    "rebase",
    "replay",
    "resolve_api_key",
]
