"""``GET /metrics``: Prometheus text format. Needs an API key unless ``VOXGATE_METRICS_PUBLIC=1``."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import Response

from voxgate import metrics
from voxgate.api.auth import check_key
from voxgate.engine.models import BUNDLED
from voxgate.services import Services

router = APIRouter()

for _name in BUNDLED:  # every engine model is listed, 0 until it loads
    metrics.MODEL_LOADED.labels(_name)


def _count_waiting_jobs(services: Services) -> int | None:
    return services.store.count_waiting() if services.store is not None else None


@router.get("/metrics", include_in_schema=False)
async def scrape(request: Request) -> Response:
    services: Services = request.app.state.services
    if not services.settings.metrics_public:
        check_key(services.settings, request.headers)
    waiting = await asyncio.to_thread(_count_waiting_jobs, services)
    if waiting is not None:
        metrics.JOB_QUEUE_DEPTH.set(waiting)
    for work_class, counters in services.recognizer.scheduler.snapshot().items():
        metrics.QUEUE_DEPTH.labels(work_class).set(counters["depth"])
    return Response(metrics.render(), media_type=metrics.CONTENT_TYPE)
