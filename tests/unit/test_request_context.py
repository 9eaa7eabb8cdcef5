"""Request ids (header, context variable, log lines), HTTP request counts and /metrics access."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from voxgate import metrics
from voxgate.api.middleware import RequestContextMiddleware
from voxgate.app import create_app
from voxgate.config import Settings
from voxgate.logs import REQUEST_ID


def _app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(RequestContextMiddleware)

    @app.get("/items/{item_id}")
    async def item(item_id: str) -> dict[str, str | None]:
        return {"item": item_id, "request_id": REQUEST_ID.get()}

    return app


def _requests(route: str, method: str, status: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "voxgate_http_requests_total", {"route": route, "method": method, "status": status}
    )
    return value or 0.0


def test_request_id_is_honoured_or_made_and_returned() -> None:
    client = TestClient(_app())
    given = client.get("/items/1", headers={"X-Request-Id": "client-id-42"})
    assert given.headers["x-request-id"] == "client-id-42" and given.json()["request_id"] == "client-id-42"
    made = client.get("/items/2")
    assert str(uuid.UUID(made.headers["x-request-id"])) == made.json()["request_id"]
    refused = client.get("/items/3", headers={"X-Request-Id": "bad id\twith spaces" + "x" * 200})
    assert refused.headers["x-request-id"] != "bad id\twith spaces" and uuid.UUID(refused.headers["x-request-id"])


def test_requests_are_counted_by_route_template_and_status() -> None:
    client = TestClient(_app())
    before_ok, before_missing = _requests("/items/{item_id}", "GET", "200"), _requests("unmatched", "GET", "404")
    for n in range(3):
        client.get(f"/items/{n}")
    client.get("/no/such/path")
    assert _requests("/items/{item_id}", "GET", "200") == before_ok + 3
    assert _requests("unmatched", "GET", "404") == before_missing + 1


def test_json_logs_carry_the_request_id() -> None:
    program = (
        "import logging; from voxgate.logs import REQUEST_ID, configure_logging; configure_logging('json'); "
        "REQUEST_ID.set('rid-7'); logging.getLogger('voxgate.test').warning('hello %s', 'there')"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    line = json.loads(done.stderr.strip().splitlines()[-1])
    assert line["request_id"] == "rid-7" and line["message"] == "hello there"
    assert line["level"] == "WARNING" and line["logger"] == "voxgate.test" and line["time"]


def test_metrics_need_a_key_unless_public() -> None:
    private = TestClient(create_app(Settings(api_keys="sk-m")))
    assert private.get("/metrics").status_code == 401
    scraped = private.get("/metrics", headers={"Authorization": "Bearer sk-m"})
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(scraped.text)}
    assert {"voxgate_realtime_sessions_open", "voxgate_http_requests", "voxgate_model_loaded"} <= names
    public = TestClient(create_app(Settings(api_keys="sk-m", metrics_public=True)))
    assert public.get("/metrics").status_code == 200
