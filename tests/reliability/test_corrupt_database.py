"""A damaged job database stops the start with a clear error and is left exactly as it was (no silent loss)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests.conftest import start_server
from voxgate.errors import StoreUnreadable
from voxgate.jobs.store import JobStore


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_server_refuses_to_start_on_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    database = data / "voxgate.db"
    database.write_bytes(os.urandom(64 * 1024))
    before = _digest(database)
    with pytest.raises(RuntimeError, match="server exited early") as info:
        start_server(data)
    log = str(info.value)
    assert "the job database" in log and "cannot be opened" in log and "left untouched" in log
    assert _digest(database) == before, "the damaged file must not be changed"


def test_damaged_pages_are_found_at_open(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    store = JobStore(f"sqlite:///{path}")
    for n in range(200):
        store.create_task(
            f"task-{n}", owner="o", model="fun-asr", family="fun-asr", parameters={"n": n}, file_urls=["x"] * 5
        )
    store.close()
    raw = bytearray(path.read_bytes())
    assert len(raw) > 16 * 4096
    raw[8 * 4096 : 12 * 4096] = b"\xa5" * (4 * 4096)  # scribble over table pages, keep the header intact
    path.write_bytes(bytes(raw))
    before = _digest(path)
    with pytest.raises(StoreUnreadable, match="cannot be opened"):
        JobStore(f"sqlite:///{path}")
    assert _digest(path) == before
