"""``POST /readings``: HTTP only. The rules (interval, clock skew, retention, one timestamp per
request, known sensors, finite values in range) and the all-or-nothing write live in
``service/ingest.py``; a refused batch stores nothing and lists what was wrong."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from service.deps import ClockDep, IngestDep, json_body, require_key
from service.schemas import ReadingsAck, ReadingsIn, problem_responses

router = APIRouter(tags=["readings"])


@router.post(
    "/readings",
    response_model=ReadingsAck,
    summary="Store sensor readings (one or many timestamps)",
    dependencies=[Depends(require_key), Depends(json_body)],
    responses=problem_responses(400, 401, 403, 413, 415, 422, 503),
)
async def post_readings(body: ReadingsIn, ingest: IngestDep, clock: ClockDep) -> ReadingsAck:
    """Validate every snapshot, then store them in one transaction and acknowledge.

    Late readings (for older slots still within retention) and partial snapshots are normal;
    a reading overwrites the same sensor's earlier value for that slot.
    """
    stored = await ingest.store(body.readings)
    return ReadingsAck(accepted=stored.accepted, slots=stored.slots,
                       latest=None if stored.latest_slot is None
                       else clock.iso(stored.latest_slot))
