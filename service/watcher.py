"""Optional: follow new versions in ``HIMNET_MODELS_DIR`` without anyone calling the API.

With ``HIMNET_WATCH_INTERVAL_S`` set, the service looks at the models directory every so many
seconds and reloads when the NEWEST version directory (by the manifest's ``created_at``; a
trainer exports into a temporary directory and renames it into place, so a manifest means a
complete bundle) changes from one look to the next. Only a change acts: what is there at
startup is the baseline, a refused bundle is not retried until something newer appears, and a
manual rollback sticks until the next publication. Off by default.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from model.bundle import BundleError, read_manifest
from service.errors import ServiceError
from service.reload import VERSION_NAME, Reloader

log = logging.getLogger("service")


def newest_version(models_dir: Path) -> tuple[str, str] | None:
    """(created_at, directory name) of the newest complete bundle, or None."""
    found = []
    try:
        entries = list(models_dir.iterdir())
    except OSError:
        return None
    for entry in entries:
        if not (VERSION_NAME.match(entry.name) and (entry / "manifest.json").is_file()):
            continue
        try:
            found.append((read_manifest(entry).created_at, entry.name))
        except (BundleError, OSError):
            continue  # a damaged manifest is what an explicit reload would explain
    return max(found) if found else None


async def watch(models_dir: Path, interval_s: float, reloader: Reloader) -> None:
    """Poll forever (the lifespan cancels it); reload when the newest version changes."""
    seen = await asyncio.to_thread(newest_version, models_dir)
    while True:
        await asyncio.sleep(interval_s)
        newest = await asyncio.to_thread(newest_version, models_dir)
        if newest is None or newest == seen:
            continue
        try:
            outcome = await reloader.reload(newest[1])
            log.info("watcher: %s %s", newest[1], outcome)
        except ServiceError as exc:
            if exc.slug == "reload-in-progress":
                continue  # someone else is swapping: look again next time
            log.warning("watcher: %s not served: %s", newest[1], exc.detail)
        except Exception:  # noqa: BLE001 - the watcher must outlive one bad bundle
            log.exception("watcher: reloading %s failed", newest[1])
        seen = newest
