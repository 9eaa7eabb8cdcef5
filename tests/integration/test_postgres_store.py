"""The job store on PostgreSQL: a throwaway cluster, a real server on it, the dashscope SDK as client."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import dashscope
import httpx
import pytest
from dashscope.audio.asr import Transcription, VocabularyService

from tests.cluster import postgres_database
from tests.conftest import API_KEY, RunningServer, audio_file, start_server, stop_server, wer


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


@pytest.fixture(scope="module")
def pg_server(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_server(tmp_path_factory.mktemp("pg-server"), {"VOXGATE_DATABASE_URL": postgres_url})
    yield server
    stop_server(server)


def test_jobs_and_vocabularies_persist_in_postgres(
    pg_server: RunningServer, postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dashscope, "api_key", API_KEY)
    monkeypatch.setattr(dashscope, "base_http_api_url", pg_server.url + "/api/v1")
    vocabulary_id = VocabularyService().create_vocabulary(
        target_model="fun-asr", prefix="pg", vocabulary=[{"text": "Zebulon", "weight": 4}]
    )
    response = Transcription.async_call(model="fun-asr", file_urls=[audio_file("something.wav").as_uri()])
    done = Transcription.wait(task=response.output.task_id)
    assert done.output["task_status"] == "SUCCEEDED", done.output
    url = done.output["results"][0]["transcription_url"]
    text = httpx.get(url, timeout=30).json()["transcripts"][0]["text"]
    assert wer("go somewhere and do something", text) <= 0.25, text

    import psycopg

    with psycopg.connect(postgres_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        tables = {row[0] for row in conn.execute("select tablename from pg_tables where schemaname = 'public'")}
        assert tables, "the store created no tables in PostgreSQL"
        dump = " ".join(str(row) for table in tables for row in conn.execute(f'select * from "{table}"').fetchall())
    assert response.output.task_id in dump
    assert vocabulary_id in dump

    # a restarted server on the same database still knows the task
    stop_server(pg_server)
    again = start_server(
        pg_server.data_dir.parent / "pg-again", {"VOXGATE_DATABASE_URL": postgres_url}, port=pg_server.port
    )
    try:
        answer = httpx.get(
            f"{again.url}/api/v1/tasks/{response.output.task_id}",
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=30,
        ).json()
        assert answer["output"]["task_status"] == "SUCCEEDED"
        assert VocabularyService().query_vocabulary(vocabulary_id)["vocabulary"][0]["text"] == "Zebulon"
    finally:
        stop_server(again)
        time.sleep(0.2)
