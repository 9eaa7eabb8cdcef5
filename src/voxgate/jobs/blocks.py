"""The steps of a file job spread over many workers: plan the file, decode one block, assemble the result.

1. :func:`plan_file` fetches the file once into shared storage (``data_dir/jobs/<task>/<file>/``), cuts each
   channel into the same VAD-aligned blocks the in-process recognizer uses, identifies the language on the
   first block with speech, writes each block's samples next to it and registers the block in the store;
   each block is handed on as soon as it is cut.
2. :func:`decode_block` decodes one block (and, with diarization, embeds its speakers) and stores the result
   once: a block decoded twice keeps the first result and the name of the worker that made it.
3. :func:`assemble_file` runs once every block is decoded: sentences in order, speakers clustered once over
   all blocks' embeddings, post-processing, and the result JSON written like the in-process backend writes it.

Every step is safe to run again (a worker killed mid-step has its message delivered again): work already in
the store is not redone, and each start of a file or block counts an attempt, so a file that kills its
workers fails with ``InvalidFile.TooManyAttempts`` after ``job_max_attempts`` deaths instead of looping.
The Celery wiring is in ``jobs.celery_app``; these functions know nothing of the broker.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxgate.audio.decode import SAMPLE_RATE, probe
from voxgate.config import Settings
from voxgate.engine import diarize
from voxgate.engine.catalog import EngineProfile
from voxgate.engine.recognizer import FileBlock, Recognizer, release_freed_memory, speech_runs
from voxgate.engine.types import AudioInfo, FileResult, Hotword, Sentence, Word
from voxgate.errors import VoxgateError
from voxgate.jobs.fetch import Fetcher
from voxgate.jobs.params import JobParameters, parse_job_parameters
from voxgate.jobs.results import failure_of, result_body, settle, write_result
from voxgate.jobs.store import FAILED, SUCCEEDED, TERMINAL, TOO_MANY_ATTEMPTS, JobStore, TaskView
from voxgate.metrics import JOB_REALTIME_FACTOR
from voxgate.services import Services

log = logging.getLogger("voxgate.jobs")

BlockSender = Callable[[str, int, int, int, str | None], None]  # task, file, channel, block, language
AssembleSender = Callable[[str, int], None]  # task, file


class _Canceled(Exception):
    """The task was canceled while its file was being cut into blocks."""


@dataclass
class WorkerContext:
    """What a worker process needs: its services (recognizer, catalog, store) and a fetcher."""

    services: Services
    fetcher: Fetcher

    @property
    def settings(self) -> Settings:
        return self.services.settings

    @property
    def store(self) -> JobStore:
        return self.services.jobs()

    @property
    def recognizer(self) -> Recognizer:
        return self.services.recognizer

    def job_dir(self, task_id: str, position: int) -> Path:
        return self.settings.data_dir / "jobs" / task_id / str(position)


# -- block results in the store -------------------------------------------------------------------------
def sentences_to_json(sentences: list[Sentence]) -> str:
    return json.dumps([dataclasses.asdict(s) for s in sentences], ensure_ascii=False)


def sentences_from_json(text: str) -> list[Sentence]:
    out = []
    for item in json.loads(text):
        words = [Word(**w) for w in item.pop("words")]
        out.append(Sentence(**item, words=words))
    return out


def speakers_to_bytes(spans: np.ndarray, embeddings: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, spans=spans, embeddings=embeddings)
    return buffer.getvalue()


def speakers_from_bytes(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    with np.load(io.BytesIO(data)) as loaded:
        return loaded["spans"], loaded["embeddings"]


# -- shared pieces --------------------------------------------------------------------------------------
def _job_setup(
    ctx: WorkerContext, task: TaskView, hotwords: list[Hotword] | None
) -> tuple[EngineProfile, JobParameters]:
    profile = ctx.services.catalog.resolve(task.model, mode="file")
    params = parse_job_parameters(task.parameters)
    if hotwords is None:
        hotwords = ctx.services.hotwords_for(params.vocabulary_id, task.owner)
    params.options.hotwords = hotwords
    return profile, params


def _hotwords_of(plan: dict[str, Any]) -> list[Hotword]:
    return [Hotword(**h) for h in plan["hotwords"]]


def _settle_if_done(store: JobStore, task_id: str) -> None:
    task = store.get_task(task_id)
    if task is not None and (task.cancel_requested or all(f.status in TERMINAL for f in task.files)):
        settle(store, task_id)


def _fail_file(ctx: WorkerContext, task_id: str, position: int, code: str, message: str) -> None:
    ctx.store.finish_file(task_id, position, status=FAILED, code=code, message=message, only_unfinished=True)
    shutil.rmtree(ctx.job_dir(task_id, position), ignore_errors=True)
    _settle_if_done(ctx.store, task_id)


def _stop_if_canceled(ctx: WorkerContext, task: TaskView) -> bool:
    if not task.cancel_requested:
        return False
    settle(ctx.store, task.id)
    shutil.rmtree(ctx.settings.data_dir / "jobs" / task.id, ignore_errors=True)
    return True


def _too_many(attempts: int) -> str:
    return f"a worker died while recognizing this file {attempts} times; it is not retried again"


def _write_block(path: Path, block: FileBlock) -> None:
    """The block's samples, and beside them its VAD runs (so a worker decodes the windows the cutter saw)."""
    runs = path.with_suffix(".runs.json")
    partial = runs.with_name(f"{runs.name}.{uuid.uuid4().hex}.part")
    partial.write_text(json.dumps([[seg["start"], seg["end"]] for seg in block.speech]))
    os.replace(partial, runs)
    partial = path.with_name(f"{path.name}.{uuid.uuid4().hex}.part")
    np.ascontiguousarray(block.audio, dtype=np.float32).tofile(partial)
    os.replace(partial, path)


def _read_block(path: Path, offset: int) -> FileBlock:
    """A block written by :func:`_write_block` (its runs found again by VAD when they were not written)."""
    audio = np.fromfile(path, dtype=np.float32)
    try:
        speech = [{"start": start, "end": end} for start, end in json.loads(path.with_suffix(".runs.json").read_text())]
    except (OSError, ValueError):
        speech = speech_runs(audio)
    return FileBlock(offset, audio, speech)


def _block_path(ctx: WorkerContext, task_id: str, position: int, channel: int, block: int) -> Path:
    return ctx.job_dir(task_id, position) / f"c{channel}-b{block}.f32"


def maybe_assemble(ctx: WorkerContext, task_id: str, position: int, send_assemble: AssembleSender) -> None:
    """Hand the file to assembly once it is fully cut and every block is decoded."""
    plan = ctx.store.get_plan(task_id, position)
    if plan is None or not plan.complete:
        return
    done, _samples = ctx.store.decoded_samples(task_id, position)
    if done >= plan.blocks:
        send_assemble(task_id, position)


# -- 1. plan ----------------------------------------------------------------------------------------------
def _failing_internally(step: Callable[..., None]) -> Callable[..., None]:
    """An unexpected error in a step fails the file with ``InternalError`` (as the in-process executor does)
    instead of leaving it RUNNING with its message acknowledged."""

    @functools.wraps(step)
    def guarded(ctx: WorkerContext, task_id: str, position: int, *args: Any) -> None:
        try:
            step(ctx, task_id, position, *args)
        except Exception:
            log.exception("%s of file %d of task %s failed", step.__name__, position, task_id)
            _fail_file(ctx, task_id, position, "InternalError", "internal error while transcribing")

    return guarded


def _file_still_open(ctx: WorkerContext, task: TaskView, position: int) -> bool:
    """The task's file at ``position`` still wants work: it exists, is not finished, the task not canceled."""
    if position >= len(task.files) or task.files[position].status in TERMINAL:
        return False
    return not _stop_if_canceled(ctx, task)


@_failing_internally
def plan_file(
    ctx: WorkerContext, task_id: str, position: int, send_block: BlockSender, send_assemble: AssembleSender
) -> None:
    """Fetch one file of a task to shared storage, cut it into blocks and send each block on."""
    store, settings = ctx.store, ctx.settings
    task = store.claim_task(task_id)
    if task is None or not _file_still_open(ctx, task, position):
        return
    existing = store.get_plan(task_id, position)
    if existing is not None and existing.complete:  # delivered again after the plan was finished
        maybe_assemble(ctx, task_id, position, send_assemble)
        return
    attempts = task.files[position].attempts
    if attempts >= settings.job_max_attempts:
        _fail_file(ctx, task_id, position, TOO_MANY_ATTEMPTS, _too_many(attempts))
        return
    token = store.start_file(task_id, position)
    job_dir = ctx.job_dir(task_id, position)
    job_dir.mkdir(parents=True, exist_ok=True)
    fetched = None
    try:
        profile, params = _job_setup(ctx, task, None)
        options = params.options
        fetched = ctx.fetcher.fetch(task.files[position].file_url)
        source = fetched.path
        info = probe(source)
        plan: dict[str, Any] = {
            "token": token,
            "info": dataclasses.asdict(info),
            "hotwords": [dataclasses.asdict(h) for h in options.hotwords],
            "channels": {},
        }
        store.save_plan(task_id, position, plan, blocks=0, complete=False)
        count = 0
        for channel in options.channels:
            language, index, total, speech = options.language, 0, 0, 0
            for block in ctx.recognizer.file_blocks(
                source, channel, max_duration_s=settings.max_file_duration_s, max_bytes=settings.max_file_bytes
            ):
                if store.cancel_requested(task_id):
                    raise _Canceled
                total = block.end
                if not block.speech:
                    continue
                speech += block.speech_samples
                if language is None:
                    language = ctx.recognizer.block_language(profile, options, block)
                _write_block(_block_path(ctx, task_id, position, channel, index), block)
                if not store.add_block(task_id, position, channel, index, block.offset, block.end):
                    send_block(task_id, position, channel, index, language)
                index += 1
                release_freed_memory()
            count += index
            plan["channels"][str(channel)] = {"language": language, "samples": total, "speech": speech}
        store.save_plan(task_id, position, plan, blocks=count, complete=True)
    except _Canceled:
        settle(store, task_id)
        shutil.rmtree(settings.data_dir / "jobs" / task_id, ignore_errors=True)
        return
    except VoxgateError as exc:
        code, message = failure_of(exc)
        _fail_file(ctx, task_id, position, code, message)
        return
    finally:
        if fetched is not None:
            fetched.cleanup()
    maybe_assemble(ctx, task_id, position, send_assemble)


# -- 2. one block -----------------------------------------------------------------------------------------
@_failing_internally
def decode_block(
    ctx: WorkerContext,
    task_id: str,
    position: int,
    channel: int,
    index: int,
    language: str | None,
    worker: str,
    send_assemble: AssembleSender,
) -> None:
    """Decode one block and store its sentences (and speaker embeddings) once."""
    store = ctx.store
    task = store.get_task(task_id)
    if task is None or not _file_still_open(ctx, task, position):
        return
    row = store.start_block(task_id, position, channel, index)
    if row is None:
        return
    if row.status != SUCCEEDED:
        if row.attempts > ctx.settings.job_max_attempts:
            _fail_file(ctx, task_id, position, TOO_MANY_ATTEMPTS, _too_many(row.attempts - 1))
            return
        plan = store.get_plan(task_id, position)
        if plan is None:
            return
        try:
            profile, params = _job_setup(ctx, task, _hotwords_of(plan.plan))
            block = _read_block(_block_path(ctx, task_id, position, channel, index), row.start_sample)
            sentences = ctx.recognizer.decode_file_block(profile, params.options, language, block)
            speakers = None
            if params.options.diarization:
                speakers = speakers_to_bytes(*diarize.embed_block(block.audio, row.start_sample))
            del block
            release_freed_memory()
        except VoxgateError as exc:
            code, message = failure_of(exc)
            _fail_file(ctx, task_id, position, code, message)
            return
        if store.finish_block(
            task_id, position, channel, index, worker=worker, sentences=sentences_to_json(sentences), speakers=speakers
        ):
            _done, samples = store.decoded_samples(task_id, position)
            store.file_progress(task_id, position, samples * 1000 // SAMPLE_RATE)
    maybe_assemble(ctx, task_id, position, send_assemble)


# -- 3. assemble ------------------------------------------------------------------------------------------
@_failing_internally
def assemble_file(ctx: WorkerContext, task_id: str, position: int) -> None:
    """Build and write the file's result from its decoded blocks, as the in-process backend would."""
    store = ctx.store
    task = store.get_task(task_id)
    if task is None or not _file_still_open(ctx, task, position):
        return
    plan = store.get_plan(task_id, position)
    rows = store.blocks(task_id, position)
    if plan is None or not plan.complete or any(r.status != SUCCEEDED for r in rows) or len(rows) < plan.blocks:
        return
    try:
        profile, params = _job_setup(ctx, task, _hotwords_of(plan.plan))
    except VoxgateError as exc:
        code, message = failure_of(exc)
        _fail_file(ctx, task_id, position, code, message)
        return
    options = params.options
    transcripts = []
    for channel in options.channels:
        facts = plan.plan["channels"][str(channel)]
        mine = [r for r in rows if r.channel == channel]
        sentences = [s for r in mine for s in sentences_from_json(r.sentences or "[]")]
        track = None
        if options.diarization:
            track = diarize.DiarizationTrack(options.speaker_count)
            for r in mine:
                if r.speakers is not None:
                    track.add_embedded(*speakers_from_bytes(r.speakers))
        transcripts.append(
            ctx.recognizer.finish_channel(
                channel, sentences, options, facts["language"], facts["samples"], facts["speech"], track
            )
        )
    info = AudioInfo(**plan.plan["info"])
    if info.duration_ms is None and transcripts:
        info.duration_ms = transcripts[0].duration_ms
    result = FileResult(info=info, transcripts=transcripts)
    token = plan.plan["token"]
    url = task.files[position].file_url
    body = result_body(result, url, profile, params)
    path = write_result(ctx.settings.data_dir / "results", token, body, writer=uuid.uuid4().hex)
    expires = time.time() + ctx.settings.result_retention_hours * 3600
    duration = info.duration_ms or max((t.duration_ms for t in transcripts), default=0)
    written = (token, str(path), expires)
    if store.finish_file(
        task_id, position, status=SUCCEEDED, duration_ms=duration, result=written, only_unfinished=True
    ):
        if duration > 0 and task.scheduled_time is not None:
            JOB_REALTIME_FACTOR.observe((time.time() - task.scheduled_time) / (duration / 1000))
        store.drop_block_payloads(task_id, position)
        shutil.rmtree(ctx.job_dir(task_id, position), ignore_errors=True)
    _settle_if_done(store, task_id)
