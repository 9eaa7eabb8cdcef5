"""Schemathesis against the server's own OpenAPI schema, on a real server: no generated request (valid or
not) may end in a server error, and the typed request models must be in the schema."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.conftest import API_KEY, RunningServer, start_server, stop_server

AUTH = {"Authorization": f"Bearer {API_KEY}"}
# Examples per operation and mode. CI runs a fixed (derandomized) set; VOXGATE_FUZZ_EXAMPLES=N explores anew.
EXAMPLES = int(os.environ.get("VOXGATE_FUZZ_EXAMPLES", "12"))
FIXED = "VOXGATE_FUZZ_EXAMPLES" not in os.environ
REQUEST_MODELS = ("GenerationRequest", "ChatRequest", "TranscriptionRequest", "CustomizationRequest")


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server of its own: no rate limits, short fetch timeouts (generated URLs lead nowhere)."""
    env = {
        "VOXGATE_SUBMIT_RPS": "0",
        "VOXGATE_QUERY_RPS": "0",
        "VOXGATE_FETCH_TIMEOUT_S": "2",
        "VOXGATE_FETCH_TOTAL_TIMEOUT_S": "4",
    }
    running = start_server(Path(tmp_path_factory.mktemp("fuzz")), env)
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def api_schema(fuzz_server: RunningServer) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(fuzz_server.url + "/openapi.json")


FUZZED = r"^/(api/v1|compatible-mode/v1|v1)/"


def test_request_models_are_in_the_schema(fuzz_server: RunningServer) -> None:
    document = httpx.get(fuzz_server.url + "/openapi.json", timeout=30).json()
    components = document["components"]["schemas"]
    for name in REQUEST_MODELS:
        assert name in components, name
    submit = document["paths"]["/api/v1/services/audio/asr/transcription"]["post"]
    body = submit["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/TranscriptionRequest"}
    parameters = components["TranscriptionParameters"]["properties"]
    assert {"language_hints", "diarization_enabled", "channel_id"} <= set(parameters)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_generated_request_is_a_server_error(
    api_schema: schemathesis.BaseSchema, fuzz_server: RunningServer, mode: GenerationMode
) -> None:
    """Every HTTP operation, with requests generated from its schema (valid ones, then invalid ones)."""
    operations = [result.ok() for result in api_schema.include(path_regex=FUZZED).get_all_operations()]
    assert len(operations) >= 8
    for operation in operations:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=FIXED,
        )
        @given(case=operation.as_strategy(mode))
        def call(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=fuzz_server.url, headers=AUTH, checks=[not_a_server_error], timeout=60)

        try:
            call()
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE, operation.label  # nothing in it can be made invalid
