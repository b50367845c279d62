"""``himnet replay`` (and ``python -m replay``): options, the API key, the dataset, the printout.

Imports no torch: the dataset comes from ``training.datasets`` (numpy/pandas readers) and the
service is reached over HTTP only.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from himnet.args import UserError, add_data_option, numbers_typed, parse_data_options
from replay.accuracy import format_report
from replay.client import ServiceClient
from replay.errors import ReplayError
from replay.stream import API_KEY_ENV, ReplayResult, replay
from training.datasets import DatasetError, SensorData, load_dataset

API_KEY_FILE_ENV = "HIMNET_API_KEY_FILE"
# what `himnet replay` reports as the user's mistake or a failed run (himnet.args.run_command);
# a ReplayError carries its exit code (1: the run failed, 2: bad input), the others exit 2
USER_ERRORS = (DatasetError, ReplayError, TypeError, ValueError)


def resolve_api_key(key: str | None, key_file: Path | None) -> str | None:
    """--api-key, --api-key-file, then $HIMNET_API_KEY, $HIMNET_API_KEY_FILE (a mounted secret)."""
    if key:
        return key.strip()
    path = key_file or (Path(os.environ[API_KEY_FILE_ENV]) if os.environ.get(API_KEY_FILE_ENV) else None)
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ReplayError(f"cannot read the API key file {path}: {exc}", exit_code=2) from exc
        if not text:
            raise ReplayError(f"the API key file {path} is empty", exit_code=2)
        return text
    env = os.environ.get(API_KEY_ENV, "").strip()
    return env or None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("stream a dataset's readings into a running forecast service at a chosen "
                          "speed-up, ask forecasts as it goes and report online accuracy per horizon")
    parser.add_argument("--url", default=os.environ.get("HIMNET_URL", "http://127.0.0.1:8000"),
                        help="base URL of the service ($HIMNET_URL)")
    parser.add_argument("--data", default="synthetic", help="dataset name or path (as `himnet train --data`)")
    add_data_option(parser, "reader option (repeatable), e.g. num_sensors=24 for synthetic")
    parser.add_argument("--slots", type=int, default=288, help="how many time slots (rows) to replay")
    parser.add_argument("--start", type=int, default=None,
                        help="first dataset row (default: keep day of week and time of day)")
    parser.add_argument("--speedup", type=float, default=60.0,
                        help="data time per wall-clock time; 1 = live, 'inf' = as fast as possible")
    parser.add_argument("--forecast-every", type=int, default=1, help="ask a forecast every K slots")
    parser.add_argument("--full-horizons", action="store_true",
                        help="ask forecasts only for windows whose every horizon lies in the replay "
                             "(the windows `himnet evaluate` scores)")
    parser.add_argument("--by-position", action="store_true",
                        help="map dataset columns to the model's sensors in order instead of by id")
    parser.add_argument("--api-key", default=None, help="API key (default: $HIMNET_API_KEY)")
    parser.add_argument("--api-key-file", type=Path, default=None,
                        help="file holding the API key (default: $HIMNET_API_KEY_FILE)")
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for /readyz")
    parser.add_argument("--timeout", type=float, default=10.0, help="HTTP timeout per request, seconds")
    parser.add_argument("--report", type=Path, default=None, help="also write the result as JSON here")
    parser.add_argument("--progress-every", type=int, default=0, help="print progress every K slots")


def run(args: argparse.Namespace) -> int:
    if args.forecast_every < 1:
        raise UserError("--forecast-every must be at least 1")
    data = load_dataset(args.data, **numbers_typed(parse_data_options(args.data_option)))
    key = resolve_api_key(args.api_key, args.api_key_file)
    result = _stream(args, data, key)
    print(f"sent {result.slots_sent} slots ({result.readings_sent} readings accepted"
          + (f", refused: {result.readings_refused}" if result.readings_refused else "")
          + f") in {result.wall_s:.1f} s; {result.forecasts} forecasts ({result.cache_hits} from the cache)"
          + (f", failed: {result.forecast_errors}" if result.forecast_errors else "")
          + f"; {result.unscored_forecasts} forecast(s) with horizons beyond the replay")
    print(format_report(result.accuracy))
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    return 0


def _stream(args: argparse.Namespace, data: SensorData, key: str | None) -> ReplayResult:
    import httpx

    # the key goes with every request: reads need it too when the service protects them
    with httpx.Client(base_url=args.url, timeout=args.timeout,
                      headers={"X-API-Key": key} if key else None) as http:
        client = ServiceClient(http)
        client.wait_ready(args.wait)
        return replay(client, data, slots=args.slots, speedup=args.speedup, start=args.start,
                      by_position=args.by_position, forecast_every=args.forecast_every,
                      api_key=key, progress_every=args.progress_every,
                      full_horizons=args.full_horizons)
