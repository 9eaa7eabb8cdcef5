"""Custom vocabularies (hotwords) through the dashscope SDKs, their validation, and their use in file jobs."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import dashscope
import httpx
import pytest
from dashscope.audio.asr import Transcription, VocabularyService
from dashscope.audio.asr.vocabulary import VocabularyServiceException

from tests.conftest import API_KEY, RunningServer, synth

CUSTOMIZATION = "/api/v1/services/audio/asr/customization"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def legacy(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dashscope, "base_http_api_url", server.url + "/api/v1")
    monkeypatch.setattr(dashscope, "api_key", API_KEY)


def test_legacy_vocabulary_service_crud(legacy: None) -> None:
    service = VocabularyService()
    items = [{"text": "Xylantrix", "weight": 4, "lang": "en"}, {"text": "阿里巴巴", "weight": 5}]
    vocabulary_id = service.create_vocabulary(target_model="fun-asr", prefix="legacy1", vocabulary=items)
    assert vocabulary_id.startswith("vocab-legacy1-")

    listed = service.list_vocabularies(prefix="legacy1")
    assert [v["vocabulary_id"] for v in listed] == [vocabulary_id]
    assert listed[0]["status"] == "OK" and listed[0]["gmt_create"]

    queried = service.query_vocabulary(vocabulary_id)
    assert queried["vocabulary"] == items and queried["target_model"] == "fun-asr"

    service.update_vocabulary(vocabulary_id, [{"text": "Tolkarov", "weight": 2}])
    assert service.query_vocabulary(vocabulary_id)["vocabulary"] == [{"text": "Tolkarov", "weight": 2}]

    service.delete_vocabulary(vocabulary_id)
    with pytest.raises(VocabularyServiceException, match="InvalidParameter"):
        service.query_vocabulary(vocabulary_id)
    assert service.list_vocabularies(prefix="legacy1") == []


def test_v2_client_vocabularies_crud(server: RunningServer) -> None:
    client = dashscope.Client(base_url=server.url + "/api/v1", api_key=API_KEY)
    created = client.audio.vocabularies.create(
        target_model="paraformer-v2", prefix="v2test", vocabulary=[{"text": "voxgate", "weight": 3}]
    )
    vocabulary_id = created.vocabulary_id or ""
    assert vocabulary_id.startswith("vocab-v2test-")
    listed = client.audio.vocabularies.list(prefix="v2test")
    assert [v["vocabulary_id"] for v in listed.vocabularies] == [vocabulary_id]
    assert client.audio.vocabularies.get(vocabulary_id).vocabulary == [{"text": "voxgate", "weight": 3}]
    client.audio.vocabularies.update(vocabulary_id, vocabulary=[{"text": "hello world", "weight": 1}])
    assert client.audio.vocabularies.get(vocabulary_id).vocabulary == [{"text": "hello world", "weight": 1}]
    client.audio.vocabularies.delete(vocabulary_id)
    assert client.audio.vocabularies.list(prefix="v2test").vocabularies == []
    with pytest.raises(Exception, match="does not exist"):
        client.audio.vocabularies.delete(vocabulary_id)


def _create(items: Any, prefix: Any = "ok", target_model: Any = "fun-asr") -> dict[str, Any]:
    return {
        "model": "speech-biasing",
        "input": {"action": "create_vocabulary", "target_model": target_model, "prefix": prefix, "vocabulary": items},
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("{oops", "JSON"),
        ({"model": "speech-biasing"}, "input"),
        ({"model": "speech-biasing", "input": {}}, "input.action"),
        ({"model": "speech-biasing", "input": {"action": "drop_everything"}}, "input.action"),
        (_create([{"text": "a", "weight": 6}]), "input.vocabulary[0].weight"),
        (_create([{"text": "a", "weight": 0}]), "input.vocabulary[0].weight"),
        (_create([{"text": "a", "weight": "4"}]), "input.vocabulary[0].weight"),
        (_create([{"text": "a", "weight": 4}, {"weight": 4}]), "input.vocabulary[1].text"),
        (_create([{"text": "  ", "weight": 4}]), "input.vocabulary[0].text"),
        (_create([{"text": "这是一个非常非常长的热词超过了十五个字的限制", "weight": 4}]), "input.vocabulary[0].text"),
        (_create([{"text": "a", "weight": 4, "lang": "English!"}]), "input.vocabulary[0].lang"),
        (_create(["just a string"]), "input.vocabulary[0]"),
        (_create([]), "input.vocabulary"),
        (_create({"text": "a"}), "input.vocabulary"),
        (_create([{"text": "a", "weight": 4}], prefix="ABC"), "input.prefix"),
        (_create([{"text": "a", "weight": 4}], prefix="waytoolongprefix"), "input.prefix"),
        (_create([{"text": "a", "weight": 4}], prefix=None), "input.prefix"),
        (_create([{"text": "a", "weight": 4}], target_model="no-such-model"), "input.target_model"),
        ({"input": {"action": "query_vocabulary"}}, "input.vocabulary_id"),
        ({"input": {"action": "query_vocabulary", "vocabulary_id": "vocab-x-missing"}}, "vocabulary_id"),
        ({"input": {"action": "list_vocabulary", "page_size": 0}}, "input.page_size"),
        (
            {"input": {"action": "update_vocabulary", "vocabulary_id": "vocab-x", "vocabulary": [{}]}},
            "input.vocabulary[0].text",
        ),
    ],
)
def test_bad_vocabulary_requests_name_the_field(server: RunningServer, body: Any, field: str) -> None:
    content = body if isinstance(body, str) else json.dumps(body)
    time.sleep(0.06)  # stay under the shared server's query rate limit (20/s)
    response = httpx.post(server.url + CUSTOMIZATION, content=content, headers=AUTH)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "InvalidParameter"
    assert field in response.json()["message"]


def test_vocabulary_requires_a_valid_key(server: RunningServer) -> None:
    body = {"input": {"action": "list_vocabulary"}}
    for headers in ({}, {"Authorization": "Bearer sk-nope"}):
        response = httpx.post(server.url + CUSTOMIZATION, json=body, headers=headers)
        assert response.status_code == 401 and response.json()["code"] == "InvalidApiKey"


def _transcribe(vocabulary: dict[str, str], audio: Path) -> str:
    done = Transcription.wait(
        task=Transcription.async_call(
            model="fun-asr", file_urls=[audio.as_uri()], language_hints=["en"], **vocabulary
        ).output.task_id
    )
    assert done.output.task_status == "SUCCEEDED", done.output
    url = done.output["results"][0]["transcription_url"]
    return str(httpx.get(url).json()["transcripts"][0]["text"])


def test_vocabulary_hotwords_reach_file_jobs(legacy: None, tmp_path: Path) -> None:
    """Rare names the model misses are recognized once they are in the task's vocabulary."""
    audio = synth("We deployed the Xylantrix cluster in the Tolkarov region.", tmp_path / "names.wav")
    service = VocabularyService()
    vocabulary_id = service.create_vocabulary(
        target_model="fun-asr",
        prefix="names",
        vocabulary=[{"text": "Xylantrix", "weight": 5}, {"text": "Tolkarov", "weight": 5}],
    )
    plain = _transcribe({}, audio)
    biased = _transcribe({"vocabulary_id": vocabulary_id}, audio)
    assert "xylantrix" not in plain.lower()
    assert "xylantrix" in biased.lower() and "tolkarov" in biased.lower(), biased
    service.delete_vocabulary(vocabulary_id)
    gone = Transcription.async_call(model="fun-asr", file_urls=[audio.as_uri()], vocabulary_id=vocabulary_id)
    assert gone.status_code == 400 and gone.code == "InvalidParameter" and "vocabulary_id" in gone.message
