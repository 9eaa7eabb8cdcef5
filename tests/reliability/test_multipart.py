"""Upload forms found by the OpenAPI fuzzer to end in server errors: UTF-8 field and file names in the
streamed multipart reader (header bytes were re-encoded as latin-1), non-ASCII signatures."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from starlette.requests import Request

from voxgate.api.audio_source import read_multipart, temp_destination
from voxgate.config import Settings
from voxgate.uploads import UploadSigner

BOUNDARY = "b0undary"


def _request(body: bytes) -> Request:
    chunks = [body[i : i + 7] for i in range(0, len(body), 7)]  # split inside headers too

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    headers = [(b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode())]
    return Request({"type": "http", "method": "POST", "headers": headers, "path": "/"}, receive)


def _part(disposition: str, value: bytes) -> bytes:
    head = f"--{BOUNDARY}\r\nContent-Disposition: form-data; {disposition}\r\n\r\n".encode()
    return head + value + b"\r\n"


def test_utf8_field_and_file_names(tmp_path: Path) -> None:
    body = (
        _part('name="名前"', "値".encode())
        + _part('name="\U000437d9 x"', b"astral")
        + _part('name="file"; filename="größe.wav"', b"RIFF0000")
        + f"--{BOUNDARY}--\r\n".encode()
    )
    settings = Settings(data_dir=tmp_path)
    form = asyncio.run(read_multipart(_request(body), destination=temp_destination(settings), max_file_bytes=100))
    assert form.get("名前") == "値" and form.get("\U000437d9 x") == "astral"
    assert form.file_name == "größe.wav" and form.file_path is not None
    assert form.file_path.read_bytes() == b"RIFF0000"


def test_signature_check_takes_any_text(tmp_path: Path) -> None:
    signer = UploadSigner(b"k" * 32)
    policy = "eyJleHBpcmF0aW9uIjoiMjAzMC0wMS0wMVQwMDowMDowMC4wMDBaIn0="
    assert signer.verify(policy, signer.sign(policy))
    assert not signer.verify(policy, "sïgnature")  # a server error before: str comparison of non-ASCII
