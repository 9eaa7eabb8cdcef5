"""Prometheus metrics of the service, in one private registry served at ``GET /metrics``.

The registry is private (not prometheus-client's global one) so several apps in one process, as in the
tests, share one set of series without clashing. Everything is process-wide: counters only grow.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

disable_created_metrics()  # type: ignore[no-untyped-call]  # no ``*_created`` series: they double the output and no dashboard reads them

REGISTRY = CollectorRegistry(auto_describe=True)

WORK_CLASSES = ("final", "partial", "sync", "file")
"""Values of the ``work_class`` label of the decode-queue metrics."""
PROTOCOLS = ("run-task", "realtime", "openai-realtime")
"""Values of the ``protocol`` label: /api-ws/v1/inference, /api-ws/v1/realtime, /v1/realtime."""

LAG_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0)
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)

# -- real-time sessions (label protocol: one of PROTOCOLS) ----------------------------------------------
SESSIONS_OPEN = Gauge(
    "voxgate_realtime_sessions_open", "Real-time recognition sessions now open.", ["protocol"], registry=REGISTRY
)
SESSIONS_REFUSED = Counter(
    "voxgate_realtime_sessions_refused_total",
    "Real-time sessions refused, by reason (capacity, auth, invalid, ...).",
    ["protocol", "reason"],
    registry=REGISTRY,
)
FINAL_LAG = Histogram(
    "voxgate_realtime_final_lag_seconds",
    "Wall time from the end of a sentence's audio reaching the server to its final result being sent.",
    ["protocol"],
    buckets=LAG_BUCKETS,
    registry=REGISTRY,
)
FIRST_PARTIAL = Histogram(
    "voxgate_realtime_first_partial_seconds",
    "Wall time from the first audio of a sentence to its first partial result.",
    ["protocol"],
    buckets=LAG_BUCKETS,
    registry=REGISTRY,
)

# -- decode scheduling --------------------------------------------------------------------------------
QUEUE_WAIT = Histogram(
    "voxgate_decode_queue_wait_seconds",
    "Time a decode waited for the model, by work class (final, partial, sync, file).",
    ["work_class"],
    buckets=WAIT_BUCKETS,
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "voxgate_decode_queue_depth", "Decodes waiting for the model, by work class.", ["work_class"], registry=REGISTRY
)

# -- file jobs ----------------------------------------------------------------------------------------
JOB_QUEUE_DEPTH = Gauge(
    "voxgate_job_queue_depth", "File transcription jobs waiting to start (pending).", registry=REGISTRY
)
JOB_REALTIME_FACTOR = Histogram(
    "voxgate_job_realtime_factor",
    "Processing time of each file of a job divided by its audio duration (x real time; lower is faster).",
    buckets=RTF_BUCKETS,
    registry=REGISTRY,
)

FINAL_DECODES = Counter(
    "voxgate_realtime_final_decodes_total",
    "Real-time final decodes by path: short window, short window retried without the previous sentence, "
    "full window; speculative decodes included.",
    ["path"],
    registry=REGISTRY,
)
SPECULATIVE_ABANDONED = Counter(
    "voxgate_realtime_speculative_abandoned_total",
    "Speculative finals given up because the speaker went on.",
    registry=REGISTRY,
)

# -- HTTP and models ----------------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "voxgate_http_requests_total",
    "HTTP requests answered, by route template, method and status code.",
    ["route", "method", "status"],
    registry=REGISTRY,
)
MODEL_LOADED = Gauge(
    "voxgate_model_loaded", "1 when the engine model is loaded in this process, else 0.", ["model"], registry=REGISTRY
)

CONTENT_TYPE = CONTENT_TYPE_LATEST


def render() -> bytes:
    """Every metric in the Prometheus text exposition format."""
    return generate_latest(REGISTRY)
