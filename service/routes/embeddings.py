"""``GET /embeddings`` and ``GET /embeddings/{node}``: what the model learned about each sensor."""

from __future__ import annotations

from typing import Literal

import numpy as np
from fastapi import APIRouter, Depends, Query

from service.deps import ClockDep, EmbeddingsDep, ForecasterDep, read_access
from service.problems import Problem
from service.schemas import (
    Neighbour,
    SensorEmbedding,
    SensorList,
    SensorSummary,
    SpatiotemporalEmbedding,
    problem_responses,
)

router = APIRouter(tags=["embeddings"], dependencies=[Depends(read_access)])


@router.get("/embeddings", response_model=SensorList, summary="List sensors with their cluster",
            responses=problem_responses(401))
async def list_sensors(idx: EmbeddingsDep) -> SensorList:
    """Every sensor in model order, with its k-means cluster of spatial embeddings."""
    return SensorList(
        count=len(idx.sensor_ids),
        clusters=idx.n_clusters,
        sensors=[SensorSummary(id=s, index=i, cluster=int(idx.clusters[i]), coords=idx.coords_of(i))
                 for i, s in enumerate(idx.sensor_ids)],
    )


@router.get("/embeddings/{node}", response_model=SensorEmbedding,
            summary="One sensor's embeddings, cluster and learned-graph neighbours",
            responses=problem_responses(401, 404, 503))
async def sensor_embedding(
    node: str,
    idx: EmbeddingsDep,
    forecaster: ForecasterDep,
    clock: ClockDep,
    include: list[Literal["st"]] = Query(default_factory=list,
                                         description="'st' adds the spatiotemporal embedding of "
                                         "the newest buffered window"),
) -> SensorEmbedding:
    """Spatial embedding, strongest neighbours (self excluded; its own weight is
    ``self_weight``), cluster and coordinates; ``?include=st`` runs (or reuses) the forecast of
    the newest window to report the sensor's spatiotemporal embedding."""
    i = idx.position.get(node)
    if i is None:
        raise Problem(404, "unknown-sensor",
                      f"no sensor {node!r} in this model; GET /embeddings lists the sensors",
                      listing="/embeddings")
    st = None
    if "st" in include:
        fc = await forecaster.from_buffer(None)
        st = SpatiotemporalEmbedding(as_of=clock.iso(fc.last_slot),
                                     vector=fc.output.st_embedding[i].astype(np.float64).tolist())
    return SensorEmbedding(
        id=node,
        index=i,
        cluster=int(idx.clusters[i]),
        coords=idx.coords_of(i),
        spatial=idx.spatial[i].tolist(),
        self_weight=float(idx.adjacency[i, i]),
        neighbours=[Neighbour(id=idx.sensor_ids[j], index=int(j), weight=float(idx.adjacency[i, j]))
                    for j in idx.neighbours[i]],
        spatiotemporal=st,
    )
