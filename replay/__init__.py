"""``himnet replay``: stream a dataset into a running service and measure online accuracy.

Talks to the service over HTTP only (httpx): ``GET /readyz``, ``GET /model``, ``GET /embeddings``,
``POST /readings`` (API key), ``POST /forecast``. Any dataset ``training.datasets`` loads works
(default: ``synthetic``).

Timeline (how dataset time becomes service time)
    The service accepts readings no later than "now" (plus a small clock skew) and no older than
    its retention. The replay maps the dataset's LAST replayed row to the wall-clock slot in which
    that row will be sent (the replay's projected end, floored to the model's interval) and keeps
    the dataset's spacing for the rows before it. Rows are sent at ``speedup`` × real time, so
    row ``k`` of ``N`` is ``(N-1-k) · interval · (1 - 1/speedup)`` older than the clock when it
    is sent: at speedup 1 the replay is a live feed, and at speedup S the service must retain
    about ``N · interval`` of readings (``HIMNET_RETENTION_MINUTES``) for the first rows to be
    accepted. Unless ``--start`` is given, the first row is chosen so that the replayed rows keep
    their day of week and time of day in the model's time zone (else their time features, which
    the service computes from the new timestamps, would not match the data).

Accuracy
    After each posted slot (every ``--forecast-every`` slots, once the input window is full) the
    replay asks ``POST /forecast`` with ``as_of`` = that slot and keeps the forecast. When the
    slot a horizon points at is posted later, its readings are the truth: MAE, RMSE and MAPE per
    horizon over the readings that are present (the dataset's missing value, 0, is skipped, as
    in training's masked metrics). Horizons whose truth lies beyond the replay stay unscored.
"""

from replay.accuracy import HorizonStats, OnlineAccuracy, format_report
from replay.cli import resolve_api_key
from replay.client import ModelInfo, ServiceClient
from replay.errors import ReplayError
from replay.stream import ReplayResult, column_mapping, replay
from replay.timeline import choose_start, iso_utc, projected_end_slot, rebase

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
    "projected_end_slot",
    "rebase",
    "replay",
    "resolve_api_key",
]
