"""The shared request rules (voxgate.params) and the one body reader (voxgate.api.body)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import Field
from starlette.requests import Request

from voxgate.api.body import read_json_object
from voxgate.errors import InvalidParameter, PayloadTooLarge
from voxgate.params import (
    AudioFormat,
    Flag,
    InstantHotwords,
    LanguageCode,
    LanguageHints,
    RequestModel,
    SampleRate,
    parse,
)


class Inner(RequestModel):
    enabled: Flag = False
    hints: LanguageHints = Field(default_factory=list)


class Sample(RequestModel):
    flag: Flag = True
    language: LanguageCode = None
    rate: SampleRate = None
    format: AudioFormat = None
    hotwords: InstantHotwords = Field(default_factory=list)
    inner: Inner = Field(default_factory=Inner)
    items: list[Inner] = Field(default_factory=list)


def _error(data: dict[str, Any]) -> InvalidParameter:
    with pytest.raises(InvalidParameter) as info:
        parse(Sample, data, prefix="parameters")
    return info.value


def test_flag_accepts_booleans_and_their_names_only() -> None:
    for value, expected in ((True, True), (False, False), ("true", True), ("FALSE", False), (" True ", True)):
        assert parse(Sample, {"flag": value}).flag is expected
    assert parse(Sample, {"flag": None}).flag is True, "null takes the default"
    for bad in (1, 0, "yes", "on", "1", "", [], {}):
        error = _error({"flag": bad})
        assert error.param == "parameters.flag" and "true or false" in error.message


def test_language_codes_are_normalised_or_refused() -> None:
    for value, expected in (("en-US", "en"), ("zh_CN", "zh"), ("ZH", "zh"), ("auto", None), ("", None), ("yue", "yue")):
        assert parse(Sample, {"language": value}).language == expected
    assert _error({"language": "klingon"}).param == "parameters.language"
    assert "unsupported language" in _error({"language": "xx"}).message
    assert _error({"language": 7}).param == "parameters.language"
    assert parse(Sample, {"inner": {"hints": ["en-GB", "auto", "zh"]}}).inner.hints == ["en", "zh"]
    assert _error({"inner": {"hints": "en"}}).param == "parameters.inner.hints", "a bare string is not an array"
    assert _error({"inner": {"hints": ["en", "english!"]}}).param == "parameters.inner.hints"


def test_errors_name_the_nested_field() -> None:
    assert _error({"items": [{}, {"enabled": "maybe"}]}).param == "parameters.items[1].enabled"
    assert _error({"items": {"enabled": True}}).message == "parameters.items: must be an array"
    assert _error({"inner": []}).message == "parameters.inner: must be an object"
    assert _error({"rate": "fast"}).param == "parameters.rate"
    for bad_rate in (True, 16000.5, 10, 10**6):
        assert _error({"rate": bad_rate}).param == "parameters.rate"
    assert parse(Sample, {"rate": "16000"}).rate == 16000 and parse(Sample, {"rate": ""}).rate is None
    assert parse(Sample, {"format": "WAV"}).format == "wav"
    assert _error({"format": "x" * 17}).param == "parameters.format"
    assert [h.text for h in parse(Sample, {"hotwords": {"Xylantrix": 5}}).hotwords] == ["Xylantrix"]
    assert "1-5" in _error({"hotwords": [{"text": "a", "weight": 9}]}).message
    assert parse(Sample, {"unknown": 1}).flag is True, "unknown fields are ignored"


def _request(body: bytes, declared: bool = True) -> Request:
    chunks = [body[i : i + 1000] for i in range(0, len(body), 1000)] or [b""]

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    headers = [(b"content-length", str(len(body)).encode())] if declared else []
    return Request({"type": "http", "method": "POST", "headers": headers, "path": "/"}, receive)


def test_body_reader_has_one_size_rule() -> None:
    assert asyncio.run(read_json_object(_request(b'{"a": 1}'), 100)) == {"a": 1}
    big = b'{"a": "' + b"x" * 5000 + b'"}'
    for declared in (True, False):  # refused from the header, and while reading when no length is declared
        with pytest.raises(PayloadTooLarge) as info:
            asyncio.run(read_json_object(_request(big, declared), 4096))
        assert info.value.status == 413
    for bad, words in ((b"", "empty"), (b"[1]", "JSON object"), (b"{", "not valid JSON")):
        with pytest.raises(InvalidParameter, match=words):
            asyncio.run(read_json_object(_request(bad), 100))
