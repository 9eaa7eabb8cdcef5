"""Audio named by a request, brought to local bytes or a local file under the synchronous-call limits.

Accepted references: ``http(s)://`` URLs (through the SSRF-safe fetcher), ``data:`` URIs (base64),
``oss://`` keys of files uploaded to this server, and ``file://`` paths when the server allows them.
Also here: a streamed ``multipart/form-data`` reader that writes the file part straight to disk.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import os
import tempfile
import wave
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from voxgate.config import Settings
from voxgate.errors import AudioError, InvalidParameter, PayloadTooLarge, VoxgateError
from voxgate.jobs.fetch import Fetcher
from voxgate.uploads import resolve_oss

DATA_URI_MAX_CHARS = 10 * 1024 * 1024  # encoded size limit of a data URI (DashScope: 10 MB)
_AUDIO_MIME_EXTRA = frozenset({"", "application/octet-stream", "application/ogg", "binary/octet-stream"})

AudioSource = bytes | Path


def _mb(n: int) -> str:
    return f"{round(n / 1024**2, 1):g} MB"


# -- data URIs ------------------------------------------------------------------------------------
def decode_data_uri(uri: str, *, param: str, max_chars: int = DATA_URI_MAX_CHARS) -> bytes:
    """The bytes of a ``data:<mime>;base64,<payload>`` URI whose type can hold audio."""
    if len(uri) > max_chars:
        raise PayloadTooLarge(
            f"the data URI is {_mb(len(uri))}; the limit is {_mb(max_chars)} encoded "
            "(send a URL or upload the file instead)",
            param=param,
        )
    header, sep, payload = uri.partition(",")
    if not sep:
        raise InvalidParameter("malformed data URI: no ',' before the payload", param=param)
    parts = [p.strip().lower() for p in header[len("data:") :].split(";")]
    mime = parts[0]
    if "base64" not in parts[1:]:
        raise InvalidParameter("data URIs must be base64-encoded (data:audio/<type>;base64,...)", param=param)
    if not (mime.startswith(("audio/", "video/")) or mime in _AUDIO_MIME_EXTRA):
        raise AudioError(f"the data URI has type '{mime}', which is not audio", reason="not_audio", param=param)
    try:
        data = base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidParameter("the data URI payload is not valid base64", param=param) from exc
    if not data:
        raise AudioError("the audio is empty (0 bytes)", reason="empty", param=param)
    return data


# -- references -----------------------------------------------------------------------------------
@dataclass(slots=True)
class LocalAudio:
    """Audio ready to decode. ``temporary`` is deleted by :meth:`discard`."""

    source: AudioSource
    temporary: Path | None = None

    def discard(self) -> None:
        if self.temporary is not None:
            self.temporary.unlink(missing_ok=True)


def _fetch(url: str, settings: Settings, max_bytes: int) -> LocalAudio:
    fetcher = Fetcher(settings)
    fetcher.max_bytes = min(fetcher.max_bytes, max_bytes)
    fetched = fetcher.fetch(url)
    return LocalAudio(source=fetched.path, temporary=fetched.path if fetched.temporary else None)


def _check_local_size(path: Path, max_bytes: int, param: str) -> None:
    size = path.stat().st_size
    if size > max_bytes:
        raise PayloadTooLarge(f"the audio file is {_mb(size)}; the limit is {_mb(max_bytes)}", param=param)


async def load_audio(
    ref: object, settings: Settings, *, param: str, max_bytes: int | None = None, owner: str | None = None
) -> LocalAudio:
    """Resolve an audio reference from a request body. Raises :class:`InvalidParameter` naming ``param``.

    ``owner``: the caller's owner tag; an ``oss://`` upload of another key is answered as missing.
    """
    limit = max_bytes or settings.sync_max_bytes
    if not isinstance(ref, str) or not ref.strip():
        raise InvalidParameter("the audio reference must be a non-empty string (URL or data URI)", param=param)
    ref = ref.strip()
    scheme = ref.split(":", 1)[0].lower() if ":" in ref else ""
    if scheme == "data":
        return LocalAudio(source=await asyncio.to_thread(decode_data_uri, ref, param=param))
    if scheme == "oss":
        path = await asyncio.to_thread(resolve_oss, settings, ref, owner=owner, param=param)
        _check_local_size(path, limit, param)
        return LocalAudio(source=path)
    if scheme in ("http", "https", "file"):
        local = await asyncio.to_thread(_fetch, ref, settings, limit)
        if isinstance(local.source, Path) and local.temporary is None:
            _check_local_size(local.source, limit, param)
        return local
    raise InvalidParameter(
        "unsupported audio reference: use an http(s) URL, a data:audio/...;base64 URI or an oss:// upload",
        param=param,
    )


@asynccontextmanager
async def audio_reference(
    ref: object, settings: Settings, *, param: str, max_bytes: int | None = None, owner: str | None = None
) -> AsyncIterator[AudioSource]:
    """``async with audio_reference(...) as source``: local audio, temporary copies removed afterwards."""
    local = await load_audio(ref, settings, param=param, max_bytes=max_bytes, owner=owner)
    try:
        yield local.source
    finally:
        local.discard()


def wrap_raw_pcm(pcm: bytes, sample_rate: int, channels: int = 1) -> bytes:
    """Little-endian 16-bit PCM as a WAV file (stdlib ``wave``) so the decoder can read it."""
    block = 2 * channels
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(2)
        writer.setframerate(sample_rate)
        writer.writeframes(pcm[: len(pcm) - len(pcm) % block])
    return out.getvalue()


# -- streamed multipart ---------------------------------------------------------------------------
@dataclass
class MultipartForm:
    """Text fields of a form (every value, in order) and the file part written to ``file_path``."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    file_path: Path | None = None
    file_name: str | None = None
    file_size: int = 0

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self.fields.get(name)
        return values[-1] if values else default

    def all(self, name: str) -> list[str]:
        return list(self.fields.get(name, []))


# Called when the file part starts, with the fields read so far and the part's filename;
# returns where to write it (or raises a VoxgateError to refuse the upload).
FileDestination = Callable[[MultipartForm, str | None], Path]


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    is_file: bool = False
    text: bytearray = field(default_factory=bytearray)


class _Collector:
    """Parser callbacks that queue events; the async reader handles them between network chunks."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []
        self._field = bytearray()
        self._value = bytearray()
        self._headers: dict[str, str] = {}

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self._begin,
            "on_header_field": lambda d, s, e: self._field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._value.extend(d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": lambda: self.events.append(("headers", dict(self._headers))),
            "on_part_data": lambda d, s, e: self.events.append(("data", bytes(d[s:e]))),
            "on_part_end": lambda: self.events.append(("end", None)),
        }

    def _begin(self) -> None:
        self._headers = {}

    def _header_end(self) -> None:
        # latin-1 keeps the raw bytes: parse_options_header round-trips them, names are then read as UTF-8
        self._headers[self._field.decode("latin-1").strip().lower()] = self._value.decode("latin-1")
        self._field.clear()
        self._value.clear()


async def read_multipart(
    request: Request,
    *,
    destination: FileDestination,
    file_field: str = "file",
    max_file_bytes: int,
    max_field_bytes: int = 64 * 1024,
    max_fields: int = 64,
) -> MultipartForm:
    """Read a ``multipart/form-data`` body, streaming the ``file_field`` part to disk under a size cap.

    On any error the partly written file is removed. The caller owns ``form.file_path`` afterwards.
    """
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise InvalidParameter("expected a multipart/form-data body with a boundary", param="Content-Type")
    declared = request.headers.get("content-length", "")
    overhead = max_fields * (max_field_bytes + 512)
    if declared.isdigit() and int(declared) > max_file_bytes + overhead:
        raise PayloadTooLarge(f"the upload is larger than the {_mb(max_file_bytes)} limit", param=file_field)

    form = MultipartForm()
    collector = _Collector()
    parser = MultipartParser(boundary, collector.callbacks())  # type: ignore[arg-type]
    part = _Part()
    out: BinaryIO | None = None
    count = 0

    def start(headers: dict[str, str]) -> None:
        nonlocal part, out, count
        _kind, disp = parse_options_header(headers.get("content-disposition", ""))
        name = disp.get(b"name", b"").decode("utf-8", "replace")
        filename = disp.get(b"filename")
        part = _Part(name=name, filename=filename.decode("utf-8", "replace") if filename is not None else None)
        count += 1
        if count > max_fields:
            raise InvalidParameter(f"the form has more than {max_fields} parts")
        if name == file_field:
            if form.file_path is not None:
                raise InvalidParameter(f"only one '{file_field}' part is accepted", param=file_field)
            part.is_file = True
            form.file_name = part.filename
            path = destination(form, part.filename)
            form.file_path = path
            out = path.open("wb")

    async def handle(events: list[tuple[str, object]]) -> None:
        nonlocal out, part
        pending: list[bytes] = []
        for kind, value in events:
            if kind == "headers":
                start(value)  # type: ignore[arg-type]
            elif kind == "data" and isinstance(value, bytes):
                data = value
                if part.is_file:
                    form.file_size += len(data)
                    if form.file_size > max_file_bytes:
                        raise PayloadTooLarge(
                            f"the file is larger than the {_mb(max_file_bytes)} limit", param=file_field
                        )
                    pending.append(data)
                else:
                    part.text.extend(data)
                    if len(part.text) > max_field_bytes:
                        raise InvalidParameter(f"form field '{part.name}' is too long", param=part.name)
            elif kind == "end":
                if part.is_file and out is not None:
                    if pending:
                        await asyncio.to_thread(out.write, b"".join(pending))
                        pending = []
                    await asyncio.to_thread(out.close)
                    out = None
                elif not part.is_file:
                    form.fields.setdefault(part.name, []).append(part.text.decode("utf-8", "replace"))
                part = _Part()
        if pending and out is not None:
            await asyncio.to_thread(out.write, b"".join(pending))

    try:
        async for chunk in request.stream():
            if not chunk:
                continue
            parser.write(chunk)
            events, collector.events = collector.events, []
            await handle(events)
        parser.finalize()
        await handle(collector.events)
        if out is not None:
            raise InvalidParameter("the multipart body ended inside the file part", param=file_field)
    except MultipartParseError as exc:
        _abandon(out, form)
        raise InvalidParameter(f"malformed multipart body: {exc}") from exc
    except (VoxgateError, ClientDisconnect, OSError, asyncio.CancelledError):
        _abandon(out, form)
        raise
    return form


def _abandon(out: BinaryIO | None, form: MultipartForm) -> None:
    if out is not None:
        with suppress(OSError):
            out.close()
    if form.file_path is not None:
        form.file_path.unlink(missing_ok=True)
        form.file_path = None


def temp_destination(settings: Settings, prefix: str = "upload-") -> FileDestination:
    """A destination that writes the file part to a fresh temporary file under ``data_dir/tmp``."""

    def choose(_form: MultipartForm, filename: str | None) -> Path:
        tmp = settings.data_dir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        suffix = Path(filename).suffix[:16] if filename else ""
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix if suffix.isascii() else "", dir=tmp)
        os.close(fd)
        return Path(name)

    return choose
