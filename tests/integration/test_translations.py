"""Speech translation to English (``POST /v1/audio/translations``) through the real engine and the openai SDK.

No recorded non-English speech ships with the project: the German and Spanish inputs are synthetic (espeak-ng).
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import API_KEY, RunningServer, synth

GERMAN = "Guten Morgen. Ich trinke jeden Tag eine Tasse Kaffee mit Milch."
ENGLISH_WORDS = {"good", "morning", "drink", "every", "day", "cup", "coffee", "milk"}
GERMAN_WORDS = {"guten", "morgen", "trinke", "jeden", "tag", "tasse", "kaffee", "milch"}


@pytest.fixture(scope="module")
def german_wav(tmp_path_factory: pytest.TempPathFactory, espeak: str) -> Path:
    return synth(GERMAN, tmp_path_factory.mktemp("translate") / "german_espeak.wav", voice="de", speed=120)


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-zäöüß']+", text.lower()))


def test_german_speech_becomes_english_text(server: RunningServer, german_wav: Path) -> None:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY)
    with german_wav.open("rb") as audio:
        result = client.audio.translations.create(model="whisper-1", file=audio, response_format="verbose_json")
    words = _words(result.text)
    assert len(words & ENGLISH_WORDS) >= 3, result.text
    assert not words & GERMAN_WORDS, result.text
    assert getattr(result, "task", None) == "translate" and result.language == "english" and 3 < result.duration < 7
    assert result.segments and all(s.text.strip() for s in result.segments)
    with german_wav.open("rb") as audio:  # the same audio transcribed stays German
        spoken = client.audio.transcriptions.create(model="whisper-1", file=audio)
    assert len(_words(spoken.text) & GERMAN_WORDS) >= 3, spoken.text


def test_translation_formats_and_errors(server: RunningServer, german_wav: Path) -> None:
    auth = {"Authorization": f"Bearer {API_KEY}"}
    url = server.url + "/v1/audio/translations"
    audio = german_wav.read_bytes()
    srt = httpx.post(
        url,
        headers=auth,
        data={"model": "whisper-1", "response_format": "srt"},
        files={"file": ("de.wav", audio)},
        timeout=120,
    )
    assert srt.status_code == 200 and "00:00:00,000 --> " in srt.text and "coffee" in srt.text.lower(), srt.text
    bad = httpx.post(
        url,
        headers=auth,
        data={"model": "whisper-1", "response_format": "xml"},
        files={"file": ("de.wav", audio)},
        timeout=60,
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "response_format"
    missing = httpx.post(url, headers=auth, data={"model": "whisper-1"}, files={"other": ("x", b"1")}, timeout=60)
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "file"
    unknown = httpx.post(url, headers=auth, data={"model": "no-such-model"}, files={"file": ("de.wav", audio)})
    assert unknown.status_code == 404


def test_spanish_speech_becomes_english_text(server: RunningServer, tmp_path: Path, espeak: str) -> None:
    spanish = synth(
        "Buenos días. Bebo una taza de café con leche todas las mañanas.", tmp_path / "es.wav", voice="es", speed=120
    )
    response = httpx.post(
        server.url + "/v1/audio/translations",
        headers={"Authorization": f"Bearer {API_KEY}"},
        data={"model": "whisper-1", "response_format": "text"},
        files={"file": ("es.wav", spanish.read_bytes())},
        timeout=120,
    )
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    words = _words(response.text)
    assert len(words & {"good", "morning", "day", "days", "drink", "cup", "coffee", "milk"}) >= 2, response.text
    assert not words & {"buenos", "bebo", "taza", "leche", "todas", "mañanas"}, response.text
