"""Fetching a job's file URL to local disk, safely.

* ``http(s)://``: streamed to a temporary file; the size cap is enforced while reading; connect/read
  timeouts plus an overall deadline; redirects followed by hand and every hop re-checked.
* SSRF protection: the host is resolved once, every resolved address is checked (private, loopback,
  link-local incl. 169.254.169.254, unspecified, multicast, reserved, shared, IPv4-mapped) and the
  connection goes to the checked address (no second DNS lookup that could be rebound).
* ``file://`` only when ``fetch_allow_file``; ``oss://<key>`` maps to ``data_dir/uploads/<key>``.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

import httpx

from voxgate.config import Settings
from voxgate.errors import FetchError, FetchForbidden, FetchTooLarge, InvalidParameter, UploadMissing
from voxgate.uploads import resolve_oss

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]
AddressPolicy = Callable[[IPAddress], str | None]

MAX_REDIRECTS = 5
CHUNK_BYTES = 256 * 1024


@dataclass(slots=True)
class FetchedFile:
    """A local copy (or the local original) of a job's file. Call :meth:`cleanup` when done."""

    path: Path
    size: int
    temporary: bool

    def cleanup(self) -> None:
        if self.temporary:
            self.path.unlink(missing_ok=True)


def forbidden_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` must not be fetched from, or None if it is a public unicast address."""
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            return forbidden_reason(mapped)
        if ip.teredo is not None:
            return "a Teredo tunnel address"
    checks = (
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address (cloud metadata)"),
        (ip.is_multicast, "a multicast address"),
        (ip.is_private, "a private address"),
        (ip.is_reserved, "a reserved address"),
        (not ip.is_global, "a non-public address"),
    )
    for hit, reason in checks:
        if hit:
            return reason
    return None


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchError(f"the host '{host}' could not be resolved ({exc.strerror})") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class Fetcher:
    """Downloads job files under the limits and address policy of the settings."""

    def __init__(
        self,
        settings: Settings,
        *,
        resolver: Resolver = system_resolver,
        policy: AddressPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.resolver = resolver
        self.policy = policy or (lambda ip: None if settings.fetch_allow_private else forbidden_reason(ip))
        self.transport = transport
        self.max_bytes = settings.max_file_bytes
        self.tmp_dir = settings.data_dir / "tmp"

    def fetch(self, url: str) -> FetchedFile:
        """Bring ``url`` to local disk or raise :class:`FetchError` (with a per-file error code)."""
        scheme = urlsplit(url).scheme.lower()
        if scheme in ("http", "https"):
            return self._fetch_http(url)
        if scheme == "file":
            return self._fetch_file(url)
        if scheme == "oss":
            return self._fetch_upload(url)
        raise FetchForbidden(f"unsupported URL scheme '{scheme or '(none)'}': use http, https or oss")

    # -- local ------------------------------------------------------------------------------------
    def _local(self, path: Path, shown: str) -> FetchedFile:
        if not path.is_file():
            raise FetchError(f"the file {shown} does not exist")
        size = path.stat().st_size
        if size > self.max_bytes:
            raise FetchTooLarge(f"the file is larger than the {_mb(self.max_bytes)} limit")
        return FetchedFile(path=path, size=size, temporary=False)

    def _fetch_file(self, url: str) -> FetchedFile:
        if not self.settings.fetch_allow_file:
            raise FetchForbidden("file:// URLs are disabled on this server (VOXGATE_FETCH_ALLOW_FILE)")
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise FetchForbidden("file:// URLs must name a local path (file:///path)")
        path = Path(unquote(parts.path))
        return self._local(path, path.name)

    def _fetch_upload(self, url: str) -> FetchedFile:
        try:
            path = resolve_oss(self.settings, url, param="file_url")
        except UploadMissing as exc:
            raise FetchError(exc.message) from exc
        except InvalidParameter as exc:
            raise FetchForbidden(exc.message) from exc
        return self._local(path, url)

    # -- http -------------------------------------------------------------------------------------
    def _pinned_targets(self, url: str) -> tuple[list[str], str, str]:
        """Check ``url``; return (URLs with each vetted IP literal, IPv4 first; Host header; TLS server name)."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise FetchForbidden(f"redirect to unsupported scheme '{scheme}' refused")
        host = parts.hostname
        if not host:
            raise FetchError("the URL has no host")
        if parts.username or parts.password:
            raise FetchForbidden("URLs with credentials are not fetched")
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError as exc:
            raise FetchError(f"invalid port in URL: {exc}") from exc
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            addresses = [ipaddress.ip_address(a.split("%")[0]) for a in self.resolver(host, port)]
        if not addresses:
            raise FetchError(f"the host '{host}' has no addresses")
        for ip in addresses:
            reason = self.policy(ip)
            if reason is not None:
                raise FetchForbidden(f"refusing to fetch from {host} ({ip}): {reason}")
        shown_host = f"[{host}]" if ":" in host else host
        host_header = shown_host if parts.port is None else f"{shown_host}:{port}"
        pinned = []
        for ip in sorted(addresses, key=lambda a: a.version):
            literal = f"[{ip}]" if ip.version == 6 else str(ip)
            netloc = literal if parts.port is None else f"{literal}:{port}"
            pinned.append(urlunsplit((scheme, netloc, parts.path or "/", parts.query, "")))
        return pinned, host_header, host

    def _open(self, client: httpx.Client, url: str) -> tuple[httpx.Response, str]:
        """Send a GET to the first reachable vetted address of ``url``'s host."""
        targets, host_header, server_name = self._pinned_targets(url)
        timeout = client.timeout.as_dict()
        failure: Exception | None = None
        for pinned in targets:
            request = client.build_request(
                "GET",
                pinned,
                headers={"Host": host_header, "User-Agent": "voxgate-fetch/1"},
                extensions={"sni_hostname": server_name, "timeout": timeout},
            )
            try:
                return client.send(request, stream=True), server_name
            except httpx.ConnectError as exc:  # try the host's next address
                failure = exc
            except httpx.TimeoutException as exc:
                raise FetchError(f"timed out connecting to {server_name}") from exc
            except httpx.HTTPError as exc:
                raise FetchError(f"download failed: {exc}") from exc
        raise FetchError(f"could not connect to {server_name}: {failure}")

    def _fetch_http(self, url: str) -> FetchedFile:
        deadline = time.monotonic() + self.settings.fetch_total_timeout_s
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        with httpx.Client(
            timeout=httpx.Timeout(self.settings.fetch_timeout_s),
            follow_redirects=False,
            transport=self.transport,
            trust_env=False,
        ) as client:
            current = url
            for _hop in range(MAX_REDIRECTS + 1):
                response, server_name = self._open(client, current)
                try:
                    if response.is_redirect:
                        location = response.headers.get("location")
                        if not location:
                            raise FetchError("redirect without a Location header")
                        current = urljoin(current, location)
                        continue
                    if response.status_code != 200:
                        raise FetchError(f"download failed: HTTP {response.status_code} from {server_name}")
                    return self._save(response, deadline)
                finally:
                    response.close()
            raise FetchError(f"too many redirects (more than {MAX_REDIRECTS})")

    def _save(self, response: httpx.Response, deadline: float) -> FetchedFile:
        declared = response.headers.get("content-length")
        if (
            not response.headers.get("content-encoding")
            and declared
            and declared.isdigit()
            and int(declared) > self.max_bytes
        ):
            raise FetchTooLarge(f"the file is larger than the {_mb(self.max_bytes)} limit")
        fd, name = tempfile.mkstemp(prefix="fetch-", suffix=".bin", dir=self.tmp_dir)
        path = Path(name)
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in response.iter_bytes(CHUNK_BYTES):  # decoded: the cap counts real bytes
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise FetchTooLarge(f"the file is larger than the {_mb(self.max_bytes)} limit")
                    if time.monotonic() > deadline:
                        raise FetchError("the download took too long")
                    out.write(chunk)
        except httpx.TimeoutException as exc:
            path.unlink(missing_ok=True)
            raise FetchError("timed out while downloading") from exc
        except httpx.HTTPError as exc:
            path.unlink(missing_ok=True)
            raise FetchError(f"download interrupted: {exc}") from exc
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        if size == 0:
            path.unlink(missing_ok=True)
            raise FetchError("the download is empty (0 bytes)")
        return FetchedFile(path=path, size=size, temporary=True)


def _mb(n: int) -> str:
    if n >= 1024**3:
        return f"{n / 1024**3:g} GB"
    if n >= 1024**2:
        return f"{n / 1024**2:g} MB"
    return f"{n} bytes"
