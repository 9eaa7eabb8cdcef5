"""What every job backend does alike: per-file failure codes, the result JSON file, the task's final status.

Used by the in-process executor (``jobs.executor``) and the distributed workers (``jobs.blocks``), so a file
gives the same result and the same error codes whichever backend ran it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from voxgate.engine.catalog import EngineProfile
from voxgate.engine.types import FileResult
from voxgate.errors import AudioError, FetchError, VoxgateError
from voxgate.jobs.params import JobParameters
from voxgate.jobs.store import CANCELED, FAILED, SUCCEEDED, TERMINAL, JobStore
from voxgate.output.dashscope_json import file_result_json

# Per-file failure codes (the ``code`` of a FAILED subtask).
DOWNLOAD_FAILED = "InvalidFile.DownloadFailed"
DECODE_FAILED = "InvalidFile.DecodeFailed"
TOO_LONG = "InvalidFile.TooLong"
TOO_LARGE = "InvalidFile.TooLarge"
_AUDIO_CODES = {"too_long": TOO_LONG, "too_large": TOO_LARGE, "not_found": DOWNLOAD_FAILED}


def failure_of(exc: VoxgateError) -> tuple[str, str]:
    """The (code, message) a file fails with for ``exc``."""
    if isinstance(exc, AudioError) and not isinstance(exc, FetchError):
        return _AUDIO_CODES.get(exc.reason, DECODE_FAILED), exc.message
    return exc.code, exc.message


def result_body(result: FileResult, url: str, profile: EngineProfile, params: JobParameters) -> dict[str, object]:
    """The DashScope result JSON of one file."""
    words = params.enable_words or profile.family != "qwen-asr"
    return file_result_json(result, url, family=profile.family, words=words)


def write_result(results_dir: Path, token: str, body: dict[str, object], writer: str = "") -> Path:
    """Write one file's result JSON under its unguessable token, atomically (a crash leaves either no file or a
    whole one; the retry after a crash overwrites the same name). ``writer`` names the partial file apart when
    several processes may write the same result at once."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{token}.json"
    partial = path.with_name(f"{token}.{writer}.part" if writer else f"{token}.part")
    with partial.open("w", encoding="utf-8") as out:
        json.dump(body, out, ensure_ascii=False)
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)
    return path


def settle(store: JobStore, task_id: str) -> None:
    """Give a task its final status from its files' (a cancel request wins over unfinished files)."""
    task = store.get_task(task_id)
    if task is None:
        return
    if task.cancel_requested:
        for f in task.files:
            if f.status not in TERMINAL:
                store.finish_file(task_id, f.position, status=CANCELED)
        store.finish_task(task_id, status=CANCELED, code="TaskCanceled", message="the task was canceled")
        return
    failed = [f for f in task.files if f.status == FAILED]
    if any(f.status == SUCCEEDED for f in task.files):
        store.finish_task(task_id, status=SUCCEEDED)
        return
    first = failed[0] if failed else None
    code = first.code if first and first.code else "InternalError"
    message = first.message if first and first.message else "no file could be transcribed"
    if len(task.files) > 1:
        message = f"all {len(task.files)} files failed; first: {message}"
    store.finish_task(task_id, status=FAILED, code=code, message=message)
