"""Incremental decoders for audio that arrives in pieces over a socket.

Each decoder takes raw bytes as they arrive (``feed``) and returns 16 kHz float32 mono samples decoded so
far; ``flush`` returns what is left at the end of the stream. Supported declared formats: ``pcm`` (16-bit
little-endian), ``wav`` (PCM inside RIFF, header in the stream), ``mp3``, ``aac`` (ADTS), ``amr`` (AMR-NB),
``opus`` and ``speex`` (both in Ogg). Bytes that do not match the declared format raise :class:`AudioError`.
"""

from __future__ import annotations

import contextlib
import struct
from typing import Any, ClassVar, Protocol

import av
import numpy as np

from voxgate.errors import AudioError, InvalidParameter

SAMPLE_RATE = 16_000
FORMATS = ("pcm", "wav", "mp3", "aac", "amr", "opus", "speex")
MAX_HEADER_BYTES = 64 * 1024  # a WAV header or Ogg page larger than this is not audio we accept
_OGG_MAX_PAGE = 65_307


class StreamDecoder(Protocol):
    def feed(self, data: bytes) -> np.ndarray: ...

    def flush(self) -> np.ndarray: ...


_EMPTY = np.zeros(0, dtype=np.float32)


def _pcm16(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


class Resampler:
    """Streaming resampler from ``rate`` Hz mono float32 to 16 kHz (identity when already 16 kHz)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._av = None if rate == SAMPLE_RATE else av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        if self._av is None or samples.size == 0:
            return samples.astype(np.float32, copy=False)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1).astype(np.float32), format="flt", layout="mono")
        frame.sample_rate = self.rate
        return _frames_to_array(self._av.resample(frame))

    def flush(self) -> np.ndarray:
        if self._av is None:
            return _EMPTY
        return _frames_to_array(self._av.resample(None))


def _frames_to_array(frames: list[av.AudioFrame]) -> np.ndarray:
    parts = [f.to_ndarray().reshape(-1) for f in frames]
    return np.concatenate(parts).astype(np.float32, copy=False) if parts else _EMPTY


class PcmDecoder:
    """Raw 16-bit little-endian mono PCM at a declared rate. A RIFF/WAVE header at the start is skipped."""

    def __init__(self, sample_rate: int) -> None:
        self._resample = Resampler(sample_rate)
        self._odd = b""
        self._first = True
        self._wav: WavDecoder | None = None

    def feed(self, data: bytes) -> np.ndarray:
        if self._wav is not None:
            return self._wav.feed(data)
        if self._first and data:
            self._first = False
            if data[:4] == b"RIFF":
                self._wav = WavDecoder(self._resample.rate)
                return self._wav.feed(data)
            _reject_container(data, "pcm")
        data = self._odd + data
        usable = len(data) - len(data) % 2
        self._odd = data[usable:]
        return self._resample(_pcm16(data[:usable]))

    def flush(self) -> np.ndarray:
        if self._wav is not None:
            return self._wav.flush()
        return self._resample.flush()


class WavDecoder:
    """A WAV file streamed byte by byte: the RIFF header is parsed from the stream, then PCM follows."""

    def __init__(self, sample_rate: int) -> None:
        self._declared = sample_rate
        self._head = b""
        self._pcm: PcmDecoder | None = None
        self._channels = 1
        self._frame_bytes = 2
        self._odd = b""

    def feed(self, data: bytes) -> np.ndarray:
        if self._pcm is None:
            self._head += data
            parsed = self._parse_header()
            if parsed is None:
                if len(self._head) > MAX_HEADER_BYTES:
                    raise AudioError("the WAV header is too large or has no data chunk", reason="bad_header")
                return _EMPTY
            rest = self._head[parsed:]
            self._head = b""
            data = rest
        assert self._pcm is not None
        if self._channels == 1:
            return self._pcm.feed(data)
        data = self._odd + data
        usable = len(data) - len(data) % self._frame_bytes
        self._odd = data[usable:]
        frames = np.frombuffer(data[:usable], dtype="<i2").reshape(-1, self._channels)
        mono = frames.mean(axis=1).astype("<i2")
        return self._pcm.feed(mono.tobytes())

    def flush(self) -> np.ndarray:
        if self._pcm is None:
            if self._head:
                raise AudioError("the stream ended inside the WAV header", reason="truncated")
            return _EMPTY
        return self._pcm.flush()

    def _parse_header(self) -> int | None:
        head = self._head
        if len(head) < 12:
            if head and not b"RIFF".startswith(head[:4]):
                raise AudioError(
                    "format is 'wav' but the audio does not start with a RIFF/WAVE header", reason="format_mismatch"
                )
            return None
        if head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
            raise AudioError(
                "format is 'wav' but the audio does not start with a RIFF/WAVE header", reason="format_mismatch"
            )
        pos = 12
        fmt_seen = False
        while pos + 8 <= len(head):
            chunk_id = head[pos : pos + 4]
            size = struct.unpack("<I", head[pos + 4 : pos + 8])[0]
            body = pos + 8
            if chunk_id == b"data":
                if not fmt_seen:
                    raise AudioError("the WAV stream has no fmt chunk before its data", reason="bad_header")
                return body
            if body + size > len(head):
                return None
            if chunk_id == b"fmt ":
                self._read_fmt(head[body : body + size])
                fmt_seen = True
            pos = body + size + (size & 1)
        return None

    def _read_fmt(self, fmt: bytes) -> None:
        if len(fmt) < 16:
            raise AudioError("the WAV fmt chunk is truncated", reason="bad_header")
        tag, channels, rate, _byte_rate, _align, bits = struct.unpack("<HHIIHH", fmt[:16])
        if tag == 0xFFFE and len(fmt) >= 26:
            tag = struct.unpack("<H", fmt[24:26])[0]
        if tag != 1 or bits != 16:
            raise AudioError(
                f"only 16-bit PCM WAV is supported in real time (got format tag {tag}, {bits} bits)",
                reason="unsupported_codec",
            )
        if channels < 1 or rate < 1000:
            raise AudioError("the WAV header names an invalid channel count or sample rate", reason="bad_header")
        self._channels = channels
        self._frame_bytes = 2 * channels
        self._pcm = PcmDecoder(rate)
        self._pcm._first = False


def _reject_container(data: bytes, declared: str) -> None:
    """Raise when bytes declared as raw PCM are clearly a compressed container."""
    magic = {
        b"OggS": "Ogg",
        b"ID3": "MP3",
        b"#!AMR": "AMR",
        b"fLaC": "FLAC",
    }
    for prefix, name in magic.items():
        if data.startswith(prefix):
            raise AudioError(f"format is '{declared}' but the audio is {name} data", reason="format_mismatch")


class CodecDecoder:
    """Compressed elementary streams (mp3, ADTS aac, AMR-NB) through FFmpeg's parser and decoder."""

    _CODECS: ClassVar[dict[str, str]] = {"mp3": "mp3", "aac": "aac", "amr": "amrnb"}

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        codec = self._CODECS[fmt]
        if fmt == "amr" and "libopencore_amrnb" in av.codecs_available:
            codec = "libopencore_amrnb"  # FFmpeg's native AMR-NB decoder rejects comfort-noise (SID) frames
        context: Any = av.CodecContext.create(codec, "r")
        if fmt == "amr":
            context.sample_rate = 8000
        self._codec: Any = context
        self._resample = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        self._checked = False
        self._pending = b""
        self._skip = 0
        self._decoded = 0
        self._fed = 0
        self._errors = 0

    def feed(self, data: bytes) -> np.ndarray:
        if not self._checked:
            self._pending += data
            if len(self._pending) < 8:
                return _EMPTY
            data = self._check_start(self._pending)
            self._pending = b""
            self._checked = True
        if self._skip:
            cut = min(self._skip, len(data))
            self._skip -= cut
            data = data[cut:]
        self._fed += len(data)
        out = self._decode(data)
        if self._decoded == 0 and self._fed > 32 * 1024:
            raise AudioError(
                f"format is '{self.fmt}' but no {self.fmt} frames were found in the audio", reason="format_mismatch"
            )
        return out

    def flush(self) -> np.ndarray:
        if not self._checked and self._pending:
            self._checked = True
            self._decode(self._check_start(self._pending))
        out = self._decode(None)
        if self._decoded == 0 and self._fed > 0:
            raise AudioError(
                f"format is '{self.fmt}' but no {self.fmt} frames were found in the audio", reason="format_mismatch"
            )
        return out

    def _check_start(self, data: bytes) -> bytes:
        if data[:4] in (b"RIFF", b"OggS"):
            kind = "WAV" if data[:4] == b"RIFF" else "Ogg"
            raise AudioError(f"format is '{self.fmt}' but the audio is {kind} data", reason="format_mismatch")
        if self.fmt == "amr":
            if not data.startswith(b"#!AMR\n"):
                raise AudioError("format is 'amr' but the audio has no '#!AMR' header", reason="format_mismatch")
            return data[6:]
        if data.startswith(b"ID3") and len(data) >= 10:
            size = 10 + ((data[6] & 0x7F) << 21 | (data[7] & 0x7F) << 14 | (data[8] & 0x7F) << 7 | (data[9] & 0x7F))
            self._skip = max(0, size - len(data))
            return data[size:]
        return data

    def _decode(self, data: bytes | None) -> np.ndarray:
        frames: list[av.AudioFrame] = []
        try:
            packets = self._codec.parse(data) if data is not None else self._codec.parse(b"")
        except av.error.FFmpegError as exc:
            raise AudioError(
                f"the {self.fmt} audio could not be parsed: {exc.strerror}", reason="decode_failed"
            ) from exc
        for packet in [*packets, None] if data is None else packets:
            try:
                frames.extend(self._codec.decode(packet))
            except av.error.FFmpegError as exc:
                self._errors += 1  # a damaged frame is skipped, as players do
                if self._errors > 50 and self._decoded == 0:
                    raise AudioError(
                        f"format is '{self.fmt}' but the audio could not be decoded as {self.fmt}",
                        reason="format_mismatch",
                    ) from exc
        out: list[av.AudioFrame] = []
        for frame in frames:
            frame.pts = None
            out.extend(self._resample.resample(frame))
        if data is None:
            out.extend(self._resample.resample(None))
        samples = _frames_to_array(out)
        self._decoded += samples.size
        return samples


class OggDecoder:
    """Opus or Speex packets in an Ogg stream: pages are parsed here, packets go to FFmpeg's decoder."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self._buffer = b""
        self._packet = b""
        self._headers: list[bytes] = []
        self._codec: Any = None
        self._resample = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)

    def feed(self, data: bytes) -> np.ndarray:
        self._buffer += data
        frames: list[av.AudioFrame] = []
        for packet in self._pages():
            frames.extend(self._on_packet(packet))
        return self._resampled(frames, final=False)

    def flush(self) -> np.ndarray:
        if self._buffer and len(self._buffer) >= 4 and self._buffer[:4] != b"OggS":
            raise AudioError(f"format is '{self.fmt}' but the audio is not an Ogg stream", reason="format_mismatch")
        frames: list[av.AudioFrame] = []
        if self._codec is not None:
            with contextlib.suppress(av.error.FFmpegError):
                frames.extend(self._codec.decode(None))
        return self._resampled(frames, final=True)

    def _pages(self) -> list[bytes]:
        packets: list[bytes] = []
        buf = self._buffer
        while len(buf) >= 27:
            if buf[:4] != b"OggS":
                raise AudioError(
                    f"format is '{self.fmt}' but the audio is not an Ogg stream (no 'OggS' page)",
                    reason="format_mismatch",
                )
            count = buf[26]
            if len(buf) < 27 + count:
                break
            lacing = buf[27 : 27 + count]
            total = 27 + count + sum(lacing)
            if len(buf) < total:
                break
            pos = 27 + count
            for size in lacing:
                self._packet += buf[pos : pos + size]
                pos += size
                if size < 255:
                    packets.append(self._packet)
                    self._packet = b""
            buf = buf[total:]
            if len(self._packet) > 4 * _OGG_MAX_PAGE:
                raise AudioError("an Ogg packet is too large", reason="bad_header")
        if len(buf) >= 4 and buf[:4] != b"OggS":
            raise AudioError(
                f"format is '{self.fmt}' but the audio is not an Ogg stream (no 'OggS' page)", reason="format_mismatch"
            )
        self._buffer = buf
        return packets

    def _on_packet(self, packet: bytes) -> list[av.AudioFrame]:
        if self._codec is None:
            self._headers.append(packet)
            head = self._headers[0]
            if self.fmt == "opus":
                if not head.startswith(b"OpusHead"):
                    raise AudioError(
                        "format is 'opus' but the Ogg stream does not carry Opus", reason="format_mismatch"
                    )
                if len(self._headers) < 2:
                    return []
                codec: Any = av.CodecContext.create("libopus", "r")
                channels = head[9] if len(head) > 9 else 1
                rate = 48000
            else:
                if not head.startswith(b"Speex   "):
                    raise AudioError(
                        "format is 'speex' but the Ogg stream does not carry Speex", reason="format_mismatch"
                    )
                if len(self._headers) < 2:
                    return []
                codec = av.CodecContext.create("speex", "r")
                rate = struct.unpack("<I", head[36:40])[0] if len(head) >= 40 else 16000
                channels = struct.unpack("<I", head[48:52])[0] if len(head) >= 52 else 1
            codec.extradata = head
            codec.sample_rate = rate
            codec.layout = "stereo" if channels == 2 else "mono"
            self._codec = codec
            return []
        try:
            return list(self._codec.decode(av.Packet(packet)))
        except av.error.FFmpegError as exc:
            raise AudioError(
                f"the {self.fmt} audio could not be decoded: {exc.strerror}", reason="decode_failed"
            ) from exc

    def _resampled(self, frames: list[av.AudioFrame], *, final: bool) -> np.ndarray:
        out: list[av.AudioFrame] = []
        for frame in frames:
            frame.pts = None
            out.extend(self._resample.resample(frame))
        if final:
            out.extend(self._resample.resample(None))
        return _frames_to_array(out)


def make_decoder(fmt: str | None, sample_rate: int | None) -> StreamDecoder:
    """A decoder for a declared ``format`` and ``sample_rate``; unknown values raise ``InvalidParameter``."""
    name = (fmt or "pcm").strip().lower()
    if name == "pcm16":
        name = "pcm"
    rate = int(sample_rate or SAMPLE_RATE)
    if rate < 1000 or rate > 192_000:
        raise InvalidParameter(f"sample_rate {rate} is not supported", param="sample_rate")
    if name == "pcm":
        return PcmDecoder(rate)
    if name == "wav":
        return WavDecoder(rate)
    if name in ("mp3", "aac", "amr"):
        return CodecDecoder(name)
    if name in ("opus", "speex"):
        return OggDecoder(name)
    raise InvalidParameter(f"format '{fmt}' is not supported; use one of: {', '.join(FORMATS)}", param="format")
