"""Decode any container/codec with PyAV into 16 kHz float32 mono PCM, one channel at a time, streamed.

Nothing here holds a whole file in memory: :func:`iter_channel` yields bounded chunks, and the size and
duration limits are checked while reading.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import av
import numpy as np

from voxgate.audio.info import AudioInfo
from voxgate.errors import AudioError, InvalidParameter

SAMPLE_RATE = 16_000
Source = str | Path | bytes | BinaryIO


def _open(source: Source) -> av.container.InputContainer:
    if isinstance(source, bytes):
        if not source:
            raise AudioError("the audio is empty (0 bytes)", reason="empty")
        source = io.BytesIO(source)
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise AudioError(f"audio file not found: {path.name}", reason="not_found")
        if path.stat().st_size == 0:
            raise AudioError("the audio file is empty (0 bytes)", reason="empty")
        source = str(path)
    try:
        return av.open(source, mode="r", metadata_errors="ignore")
    except (av.error.InvalidDataError, av.error.EOFError) as exc:
        raise AudioError("the data is not a recognized audio or video format", reason="not_audio") from exc
    except av.error.FFmpegError as exc:
        raise AudioError(f"the audio could not be opened: {exc.strerror}", reason="decode_failed") from exc


def _audio_stream(container: av.container.InputContainer) -> av.audio.stream.AudioStream:
    if not container.streams.audio:
        raise AudioError("the file has no audio track", reason="no_audio_stream")
    return container.streams.audio[0]


def probe(source: Source) -> AudioInfo:
    """Container facts without decoding the samples."""
    with _open(source) as container:
        stream = _audio_stream(container)
        duration_ms: int | None = None
        if stream.duration is not None and stream.time_base is not None:
            duration_ms = int(stream.duration * stream.time_base * 1000)
        elif container.duration is not None:
            duration_ms = int(container.duration / 1000)
        return AudioInfo(
            format_name=container.format.name,
            codec=stream.codec_context.name,
            sample_rate=stream.codec_context.sample_rate or 0,
            channels=stream.codec_context.channels or 0,
            duration_ms=duration_ms,
        )


def iter_channel(
    source: Source,
    channel: int = 0,
    *,
    chunk_seconds: float = 30.0,
    max_duration_s: float | None = None,
    max_bytes: int | None = None,
) -> Iterator[np.ndarray]:
    """Yield float32 16 kHz mono chunks (about ``chunk_seconds`` each) of one channel.

    Raises :class:`AudioError` for unreadable, non-audio, truncated or over-limit input and
    :class:`InvalidParameter` for a channel the file does not have.
    """
    if max_bytes is not None and isinstance(source, (str, Path)) and os.path.getsize(source) > max_bytes:
        raise AudioError(f"the file exceeds the {max_bytes // 1024**2} MB limit", reason="too_large")
    if max_bytes is not None and isinstance(source, bytes) and len(source) > max_bytes:
        raise AudioError(f"the audio exceeds the {max_bytes // 1024**2} MB limit", reason="too_large")
    container = _open(source)
    try:
        stream = _audio_stream(container)
        channels = stream.codec_context.channels or 1
        if channel < 0 or channel >= channels:
            raise InvalidParameter(
                f"channel_id {channel} does not exist: the audio has {channels} channel(s)",
                param="channel_id",
            )
        if max_duration_s:
            _refuse_declared_over(container, stream, source, max_duration_s)
        layout = stream.codec_context.layout.name if channels > 2 else ("stereo" if channels == 2 else "mono")
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=SAMPLE_RATE)
        chunk_samples = int(chunk_seconds * SAMPLE_RATE)
        max_samples = int(max_duration_s * SAMPLE_RATE) if max_duration_s else None
        pending: list[np.ndarray] = []
        pending_len = 0
        total = 0
        decoded_any = False
        try:
            for frame in _decode_frames(container, stream):
                for out in resampler.resample(frame):
                    decoded_any = True
                    data = out.to_ndarray()[channel]
                    total += data.shape[0]
                    if max_samples is not None and total > max_samples:
                        raise AudioError(f"the audio is longer than {_limit_text(max_duration_s)}", reason="too_long")
                    pending.append(data)
                    pending_len += data.shape[0]
                    if pending_len >= chunk_samples:
                        block = np.concatenate(pending)
                        pending = [block[chunk_samples:]] if block.shape[0] > chunk_samples else []
                        pending_len = block.shape[0] - chunk_samples
                        yield np.ascontiguousarray(block[:chunk_samples], dtype=np.float32)
            for out in resampler.resample(None):
                decoded_any = True
                data = out.to_ndarray()[channel]
                total += data.shape[0]
                pending.append(data)
        except av.error.FFmpegError as exc:
            if not decoded_any:
                raise AudioError(f"the audio stream is corrupt: {exc.strerror}", reason="corrupt") from exc
            raise AudioError(
                f"the audio is truncated or corrupt after {total / SAMPLE_RATE:.1f} s: {exc.strerror}",
                reason="truncated",
            ) from exc
        if not decoded_any or total == 0:
            raise AudioError("the audio contains no decodable samples", reason="corrupt")
        declared = _declared_seconds(container, stream, source)
        decoded = total / SAMPLE_RATE
        if declared is not None and decoded < declared * 0.9 - 0.5:
            raise AudioError(
                f"the audio is truncated: the header declares {declared:.1f} s but only {decoded:.1f} s decode",
                reason="truncated",
            )
        if pending:
            yield np.ascontiguousarray(np.concatenate(pending), dtype=np.float32)
    finally:
        container.close()


def _limit_text(max_duration_s: float | None) -> str:
    limit = max_duration_s or 0.0
    return f"the {limit / 3600:g} h limit" if limit >= 3600 else f"the {limit:g} s limit"


def _hours_or_seconds(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds:.0f} s"


# A header's duration may be an estimate (FFmpeg derives MP3/ADTS durations from size and bit rate): refuse up
# front only when it is clearly over; the count of decoded samples catches the rest while reading.
DECLARED_MARGIN = 1.05


def _refuse_declared_over(
    container: av.container.InputContainer,
    stream: av.audio.stream.AudioStream,
    source: Source,
    max_duration_s: float,
) -> None:
    """Refuse before decoding a file whose header says it is far over the duration limit (a small compressed
    file can decode to many hours)."""
    declared = _declared_seconds(container, stream, source)
    if declared is None and container.duration is not None:
        declared = container.duration / 1_000_000
    if declared is not None and declared > max_duration_s * DECLARED_MARGIN:
        over = f"the audio is longer than {_limit_text(max_duration_s)}"
        raise AudioError(f"{over}: its header declares {_hours_or_seconds(declared)}", reason="too_long")


def _declared_seconds(
    container: av.container.InputContainer, stream: av.audio.stream.AudioStream, source: Source
) -> float | None:
    """Duration the header promises. For WAV, FFmpeg derives it from the file size, so read the RIFF
    ``data`` chunk size instead (a streamed or truncated upload shows up there)."""
    if container.format.name == "wav" and isinstance(source, (str, Path)):
        declared = _wav_data_bytes(Path(source))
        ctx = stream.codec_context
        bytes_per_second = (ctx.sample_rate or 0) * (ctx.channels or 0) * (ctx.format.bytes if ctx.format else 0)
        if declared and bytes_per_second:
            return declared / bytes_per_second
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return None


def _wav_data_bytes(path: Path) -> int | None:
    """Size the RIFF header declares for the ``data`` chunk (None if unknown or streamed)."""
    with path.open("rb") as handle:
        header = handle.read(4096)
    if header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 8 <= len(header):
        chunk, size = header[pos : pos + 4], int.from_bytes(header[pos + 4 : pos + 8], "little")
        if chunk == b"data":
            return None if size in (0, 0xFFFFFFFF) else size
        pos += 8 + size + (size & 1)
    return None


# FFmpeg's native AMR-NB decoder rejects comfort-noise (SID) frames; the opencore decoder handles them.
_PREFERRED_DECODERS = {"amrnb": "libopencore_amrnb", "amrwb": "libopencore_amrwb"}


def _decode_frames(
    container: av.container.InputContainer, stream: av.audio.stream.AudioStream
) -> Iterator[av.AudioFrame]:
    preferred = _PREFERRED_DECODERS.get(stream.codec_context.name)
    if preferred and preferred in av.codecs_available:
        decoder: Any = av.CodecContext.create(preferred, "r")
        decoder.sample_rate = stream.codec_context.sample_rate
        for packet in container.demux(stream):
            if packet.size:
                yield from decoder.decode(packet)
        return
    for packet in container.demux(stream):
        yield from packet.decode()


def decode_channel(source: Source, channel: int = 0, *, max_duration_s: float | None = None) -> np.ndarray:
    """Decode one whole channel (for short audio only: sync calls, tests)."""
    chunks = list(iter_channel(source, channel, max_duration_s=max_duration_s))
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)


def pcm16_to_float(data: bytes) -> np.ndarray:
    """Little-endian signed 16-bit PCM bytes to float32 in [-1, 1)."""
    usable = len(data) - (len(data) % 2)
    return np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / 32768.0
