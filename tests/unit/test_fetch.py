"""The job file fetcher: SSRF refusal, size caps, redirects, timeouts, file:// and oss:// resolution."""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from voxgate.config import Settings
from voxgate.errors import FetchError, FetchForbidden, FetchTooLarge
from voxgate.jobs.fetch import Fetcher, forbidden_reason

PAYLOAD = bytes(range(256)) * 400  # 102 400 bytes


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/audio.wav":
            self._send(PAYLOAD, length=True)
        elif self.path == "/chunked.wav":
            self._send(PAYLOAD, length=False)
        elif self.path == "/host":
            self._send(self.headers.get("Host", "").encode(), length=True)
        elif self.path.startswith("/redirect?"):
            self.send_response(302)
            self.send_header("Location", self.path.split("?", 1)[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/loop":
            self.send_response(301)
            self.send_header("Location", "/loop")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/slow":
            time.sleep(2)
            self._send(b"late", length=True)
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    def _send(self, data: bytes, *, length: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "audio/wav")
        if length:
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        else:
            self.send_header("Connection", "close")
            self.end_headers()
            for i in range(0, len(data), 8192):
                self.wfile.write(data[i : i + 8192])
            self.close_connection = True


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that gave up (timeout tests) are expected


@pytest.fixture(scope="module")
def http_base() -> Iterator[str]:
    httpd = _QuietServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(data_dir=tmp_path, **values)  # type: ignore[arg-type]


def _no_dns(host: str, port: int) -> list[str]:
    raise AssertionError(f"unexpected DNS lookup of {host}")


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "100.64.0.1",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "2002:7f00:1::1",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2001:4860:4860::8888"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:1/a.wav",
        "http://10.0.0.1/a.wav",
        "http://169.254.169.254/latest/meta-data/",
        "https://[::1]/a.wav",
        "http://0.0.0.0:8000/a.wav",
        "http://[::ffff:10.0.0.1]/a.wav",
    ],
)
def test_literal_private_urls_refused_by_default(tmp_path: Path, url: str) -> None:
    fetcher = Fetcher(_settings(tmp_path), resolver=_no_dns)
    with pytest.raises(FetchForbidden) as info:
        fetcher.fetch(url)
    assert info.value.code == "InvalidFile.URLNotAllowed"


def test_resolved_addresses_are_checked_not_only_the_literal(tmp_path: Path) -> None:
    answers = {
        "intranet.example": ["10.1.2.3"],
        "mixed.example": ["93.184.216.34", "127.0.0.1"],
        "metadata.example": ["169.254.169.254"],
    }
    fetcher = Fetcher(_settings(tmp_path), resolver=lambda host, port: answers[host])
    for host in answers:
        with pytest.raises(FetchForbidden, match=host):
            fetcher.fetch(f"http://{host}/a.wav")


def test_unsupported_schemes_and_file_urls_refused_by_default(tmp_path: Path) -> None:
    fetcher = Fetcher(_settings(tmp_path), resolver=_no_dns)
    target = tmp_path / "a.wav"
    target.write_bytes(b"RIFF")
    for url in (f"file://{target}", "ftp://example.com/a.wav", "gopher://x/", "a.wav"):
        with pytest.raises(FetchForbidden):
            fetcher.fetch(url)


def test_file_urls_when_allowed(tmp_path: Path) -> None:
    target = tmp_path / "a b.wav"
    target.write_bytes(PAYLOAD)
    fetched = Fetcher(_settings(tmp_path, fetch_allow_file=True)).fetch(f"file://{str(target).replace(' ', '%20')}")
    assert fetched.path == target and fetched.size == len(PAYLOAD) and not fetched.temporary
    fetched.cleanup()
    assert target.exists()  # the original is never deleted
    with pytest.raises(FetchError, match="does not exist"):
        Fetcher(_settings(tmp_path, fetch_allow_file=True)).fetch(f"file://{tmp_path}/missing.wav")


def test_oss_keys_resolve_inside_uploads_only(tmp_path: Path) -> None:
    upload = tmp_path / "uploads" / "dashscope-instant" / "abc" / "clip.wav"
    upload.parent.mkdir(parents=True)
    upload.write_bytes(PAYLOAD)
    (tmp_path / "secret.txt").write_text("x")
    fetcher = Fetcher(_settings(tmp_path))
    assert fetcher.fetch("oss://dashscope-instant/abc/clip.wav").path == upload.resolve()
    with pytest.raises(FetchForbidden):
        fetcher.fetch("oss://../secret.txt")
    with pytest.raises(FetchForbidden):
        fetcher.fetch("oss://dashscope-instant/%2e%2e/%2e%2e/%2e%2e/secret.txt")
    with pytest.raises(FetchError, match="does not exist"):
        fetcher.fetch("oss://dashscope-instant/abc/other.wav")


def test_http_download_streams_to_a_temporary_file(tmp_path: Path, http_base: str) -> None:
    fetcher = Fetcher(_settings(tmp_path, fetch_allow_private=True))
    for path in ("/audio.wav", "/chunked.wav"):
        fetched = fetcher.fetch(http_base + path)
        assert fetched.temporary and fetched.path.read_bytes() == PAYLOAD
        fetched.cleanup()
        assert not fetched.path.exists()


def test_local_http_refused_without_allow_private(tmp_path: Path, http_base: str) -> None:
    with pytest.raises(FetchForbidden, match="loopback"):
        Fetcher(_settings(tmp_path)).fetch(http_base + "/audio.wav")


def test_size_cap_enforced_while_reading(tmp_path: Path, http_base: str) -> None:
    fetcher = Fetcher(_settings(tmp_path, fetch_allow_private=True, max_file_bytes=50_000))
    for path in ("/audio.wav", "/chunked.wav"):  # declared length, then no length at all
        with pytest.raises(FetchTooLarge) as info:
            fetcher.fetch(http_base + path)
        assert info.value.code == "InvalidFile.TooLarge"
    assert not any((tmp_path / "tmp").iterdir())  # partial downloads removed


def test_connection_goes_to_the_checked_address(tmp_path: Path, http_base: str) -> None:
    """A name is resolved once and the socket goes to that vetted address (no second lookup to rebind)."""
    port = int(http_base.rsplit(":", 1)[1])
    calls: list[str] = []

    def resolver(host: str, _port: int) -> list[str]:
        calls.append(host)
        return ["127.0.0.1"]

    fetcher = Fetcher(_settings(tmp_path, fetch_allow_private=True), resolver=resolver)
    fetched = fetcher.fetch(f"http://audio.invalid:{port}/host")
    assert fetched.path.read_bytes() == f"audio.invalid:{port}".encode()
    assert calls == ["audio.invalid"]


def test_redirects_are_rechecked(tmp_path: Path, http_base: str) -> None:
    only_loopback = Fetcher(
        _settings(tmp_path, fetch_allow_file=True),
        policy=lambda ip: None if str(ip) == "127.0.0.1" else "not allowed in this test",
    )
    fetched = only_loopback.fetch(http_base + "/redirect?/audio.wav")
    assert fetched.path.read_bytes() == PAYLOAD
    for target in ("http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/a.wav", "file:///etc/passwd"):
        with pytest.raises(FetchForbidden):
            only_loopback.fetch(f"{http_base}/redirect?{target}")
    with pytest.raises(FetchError, match="too many redirects"):
        only_loopback.fetch(http_base + "/loop")


def test_http_errors_and_timeouts_are_download_failures(tmp_path: Path, http_base: str) -> None:
    fetcher = Fetcher(_settings(tmp_path, fetch_allow_private=True, fetch_timeout_s=0.5))
    with pytest.raises(FetchError, match="HTTP 404") as info:
        fetcher.fetch(http_base + "/missing.wav")
    assert info.value.code == "InvalidFile.DownloadFailed"
    started = time.monotonic()
    with pytest.raises(FetchError, match="timed out"):
        fetcher.fetch(http_base + "/slow")
    assert time.monotonic() - started < 1.8


def test_next_vetted_address_tried_when_one_refuses(tmp_path: Path, http_base: str) -> None:
    port = int(http_base.rsplit(":", 1)[1])
    fetcher = Fetcher(
        _settings(tmp_path, fetch_allow_private=True), resolver=lambda host, _port: ["127.0.0.2", "127.0.0.1"]
    )
    assert fetcher.fetch(f"http://two.invalid:{port}/audio.wav").path.read_bytes() == PAYLOAD
