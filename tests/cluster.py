"""Throwaway shared-state servers for tests: a real ``redis-server`` and a real PostgreSQL cluster on loopback.

Both live in their own temporary directory outside pytest's private tree (PostgreSQL drops to the ``postgres``
user when run as root) and are removed afterwards. Use them as context managers::

    with redis_server() as redis:      # redis.url == "redis://127.0.0.1:PORT/0"
        ...
    with postgres_database() as url:   # "postgresql+psycopg://voxgate@127.0.0.1:PORT/voxgate"
        ...
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import free_port


def _wait_for_port(port: int, process: subprocess.Popen[bytes] | None, what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited early (code {process.returncode})")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout_s} s")


@dataclass
class RedisServer:
    """A ``redis-server`` on 127.0.0.1 with the append-only file on (queued work survives a restart)."""

    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(binary):
            raise RuntimeError("redis-server is required (make install installs redis-server)")
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        _wait_for_port(self.port, self.process, "redis-server")

    def stop(self, kill: bool = False) -> None:
        """Stop the server (SIGTERM, or SIGKILL with ``kill``); ``start`` brings it back on the same port and data."""
        if self.process is None or self.process.poll() is not None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A fresh ``redis-server`` on a free loopback port, removed on exit."""
    directory = Path(tempfile.mkdtemp(prefix="voxgate-redis-"))
    server = RedisServer(free_port(), directory)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError("PostgreSQL server binaries are required (make install installs postgresql)")
    return found[-1]


def _as_postgres(args: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: drop to the ``postgres`` user when we are root."""
    if os.geteuid() != 0:
        return args
    runuser = shutil.which("runuser") or next(
        (p for p in ("/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser") if os.path.exists(p)), None
    )
    if runuser is None:
        raise RuntimeError("runuser (util-linux) is required to start PostgreSQL as root")
    return [runuser, "-u", "postgres", "--", *args]


@contextlib.contextmanager
def postgres_database(max_connections: int = 100) -> Iterator[str]:
    """A throwaway PostgreSQL cluster with a ``voxgate`` database; yields its SQLAlchemy URL."""
    # outside pytest's private (0700, root-owned) temp tree, so the postgres user can reach it
    base = Path(tempfile.mkdtemp(prefix="voxgate-pg-"))
    data = base / "data"
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
    try:
        subprocess.run(
            _as_postgres([_pg_bin("initdb"), "-D", str(data), "-U", "voxgate", "--auth=trust"]),
            check=True,
            capture_output=True,
        )
        port = free_port()
        options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c max_connections={max_connections}"
        subprocess.run(
            _as_postgres([_pg_bin("pg_ctl"), "-D", str(data), "-o", options, "-l", str(base / "log"), "-w", "start"]),
            check=True,
            capture_output=True,
        )
        try:
            subprocess.run(
                _as_postgres([_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "voxgate", "voxgate"]),
                check=True,
                capture_output=True,
            )
            yield f"postgresql+psycopg://voxgate@127.0.0.1:{port}/voxgate"
        finally:
            subprocess.run(
                _as_postgres([_pg_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]), capture_output=True
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)
