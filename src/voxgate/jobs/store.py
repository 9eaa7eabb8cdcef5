"""The durable job store: file-transcription tasks, their files, result files and vocabularies.

SQLAlchemy 2 models plus a small repository. SQLite in ``data_dir`` by default; any SQLAlchemy URL works.
This is the one source of truth for job state: the executor and the HTTP handlers only read and write here.
Every method is blocking (call it from a worker thread when on the event loop).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    BigInteger,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    case,
    create_engine,
    delete,
    event,
    func,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DatabaseError, IntegrityError, ProgrammingError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

from voxgate.engine.types import Hotword
from voxgate.errors import StoreUnreadable

# A file the process died in this many times (a graceful stop hands the file back uncounted, see
# JobStore.release_running) is not started again: it fails with this code.
DEFAULT_MAX_ATTEMPTS = 3
TOO_MANY_ATTEMPTS = "InvalidFile.TooManyAttempts"

# Task and file states (DashScope names).
PENDING = "PENDING"
RUNNING = "RUNNING"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
CANCELED = "CANCELED"
UNKNOWN = "UNKNOWN"
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELED})


def owner_of(api_key: str) -> str:
    """A stable, non-reversible owner tag for an API key (keys themselves are never stored)."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:32]


class Base(DeclarativeBase):
    pass


class TaskRow(Base):
    __tablename__ = "tasks"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), index=True)
    model: Mapped[str] = mapped_column(String(128))
    family: Mapped[str] = mapped_column(String(32))
    parameters: Mapped[str] = mapped_column(Text, default="{}")  # JSON of the request's parameters
    status: Mapped[str] = mapped_column(String(16), index=True, default=PENDING)
    code: Mapped[str | None] = mapped_column(String(128), nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    submit_time: Mapped[float] = mapped_column(Float, index=True)
    scheduled_time: Mapped[float | None] = mapped_column(Float, nullable=True)
    end_time: Mapped[float | None] = mapped_column(Float, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[int] = mapped_column(Integer, default=0)
    files: Mapped[list[FileRow]] = relationship(
        back_populates="task", order_by="FileRow.position", cascade="all, delete-orphan"
    )


class FileRow(Base):
    __tablename__ = "task_files"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    file_url: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    code: Mapped[str | None] = mapped_column(String(128), nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    processed_ms: Mapped[int] = mapped_column(Integer, default=0)
    duration_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    result_token: Mapped[str | None] = mapped_column(String(128), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # times recognition started
    task: Mapped[TaskRow] = relationship(back_populates="files")


class ResultRow(Base):
    __tablename__ = "results"

    token: Mapped[str] = mapped_column(String(128), primary_key=True)
    task_id: Mapped[str] = mapped_column(String(64), index=True)
    path: Mapped[str] = mapped_column(Text)
    created: Mapped[float] = mapped_column(Float)
    expires: Mapped[float] = mapped_column(Float, index=True)


class FilePlanRow(Base):
    """How a file of a distributed job was cut into blocks (one row per task file)."""

    __tablename__ = "file_plans"

    task_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    plan: Mapped[str] = mapped_column(Text)  # JSON: audio info, hotwords, per channel language and sample counts
    blocks: Mapped[int] = mapped_column(Integer, default=0)  # blocks with speech
    complete: Mapped[int] = mapped_column(Integer, default=0)  # 1 once every block is known


class BlockRow(Base):
    """One VAD-aligned block of a file of a distributed job and, once decoded, its sentences."""

    __tablename__ = "file_blocks"

    task_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[int] = mapped_column(Integer, primary_key=True)
    block: Mapped[int] = mapped_column(Integer, primary_key=True)
    start_sample: Mapped[int] = mapped_column(BigInteger)
    end_sample: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # times a worker started decoding it
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)  # the worker whose result was kept
    sentences: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON, before post-processing
    speakers: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # speaker-embedding windows (.npz)
    decoded_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class VocabularyRow(Base):
    __tablename__ = "vocabularies"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), index=True)
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    target_model: Mapped[str] = mapped_column(String(128))
    items: Mapped[str] = mapped_column(Text)  # JSON list of {"text","weight","lang"?}
    created: Mapped[float] = mapped_column(Float)
    modified: Mapped[float] = mapped_column(Float)


class SecretRow(Base):
    """Random secrets every process on this database shares (upload policy signing, temporary keys)."""

    __tablename__ = "shared_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(128))


# -- plain snapshots handed to callers --------------------------------------------------------------
@dataclass(slots=True)
class FileView:
    position: int
    file_url: str
    status: str
    code: str | None
    message: str | None
    processed_ms: int
    duration_ms: int | None
    result_token: str | None
    attempts: int = 0


@dataclass(slots=True)
class TaskView:
    id: str
    owner: str
    model: str
    family: str
    parameters: dict[str, Any]
    status: str
    code: str | None
    message: str | None
    submit_time: float
    scheduled_time: float | None
    end_time: float | None
    attempts: int
    cancel_requested: bool
    files: list[FileView] = field(default_factory=list)


@dataclass(slots=True)
class VocabularyView:
    id: str
    prefix: str
    target_model: str
    items: list[dict[str, Any]]
    created: float
    modified: float
    owner: str = ""


@dataclass(slots=True)
class BlockView:
    channel: int
    block: int
    start_sample: int
    end_sample: int
    status: str
    attempts: int
    worker: str | None
    sentences: str | None
    speakers: bytes | None


@dataclass(slots=True)
class PlanView:
    plan: dict[str, Any]
    blocks: int
    complete: bool


def _task_view(row: TaskRow) -> TaskView:
    return TaskView(
        id=row.id,
        owner=row.owner,
        model=row.model,
        family=row.family,
        parameters=json.loads(row.parameters or "{}"),
        status=row.status,
        code=row.code,
        message=row.message,
        submit_time=row.submit_time,
        scheduled_time=row.scheduled_time,
        end_time=row.end_time,
        attempts=row.attempts,
        cancel_requested=bool(row.cancel_requested),
        files=[
            FileView(
                f.position,
                f.file_url,
                f.status,
                f.code,
                f.message,
                f.processed_ms,
                f.duration_ms,
                f.result_token,
                f.attempts,
            )
            for f in row.files
        ],
    )


def _block_view(row: BlockRow) -> BlockView:
    return BlockView(
        row.channel,
        row.block,
        row.start_sample,
        row.end_sample,
        row.status,
        row.attempts,
        row.worker,
        row.sentences,
        row.speakers,
    )


def _vocabulary_view(row: VocabularyRow) -> VocabularyView:
    return VocabularyView(
        row.id, row.prefix, row.target_model, json.loads(row.items), row.created, row.modified, row.owner
    )


def _delete_blocks(s: Session, task_ids: list[str]) -> None:
    s.execute(delete(BlockRow).where(BlockRow.task_id.in_(task_ids)))
    s.execute(delete(FilePlanRow).where(FilePlanRow.task_id.in_(task_ids)))


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _check_readable(engine: Engine) -> None:
    """SQLite: a quick structural check, so a damaged file stops the start instead of losing jobs later."""
    if engine.dialect.name != "sqlite":
        return
    with engine.connect() as conn:
        problems = [str(row[0]) for row in conn.execute(text("PRAGMA quick_check"))]
    if problems != ["ok"]:
        raise DatabaseError("PRAGMA quick_check", None, Exception("; ".join(problems[:3])))


def _add_missing_columns(engine: Engine) -> None:
    """Columns added after a database was created (``create_all`` only creates missing tables)."""
    present = {c["name"] for c in inspect(engine).get_columns("task_files")}
    if "attempts" not in present:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE task_files ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0"))


def _create_tables(engine: Engine) -> None:
    """Create missing tables; when several nodes start at once on one database, one of them wins."""
    for attempt in range(5):
        try:
            Base.metadata.create_all(engine)
            return
        except (IntegrityError, ProgrammingError):
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL mode, a busy timeout and cross-thread use."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _undecoded_block(task_id: str, position: int, channel: int, block: int) -> list[Any]:
    """Conditions selecting one block of a distributed file job while it has no stored result."""
    return [
        BlockRow.task_id == task_id,
        BlockRow.position == position,
        BlockRow.channel == channel,
        BlockRow.block == block,
        BlockRow.status != SUCCEEDED,
    ]


class JobStore:
    """Repository over the job tables. Thread-safe: every call opens its own short session."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        try:
            _check_readable(self.engine)
            _create_tables(self.engine)
            _add_missing_columns(self.engine)
        except DatabaseError as exc:
            self.engine.dispose()
            raise StoreUnreadable(
                f"the job database {self.engine.url.render_as_string(hide_password=True)} cannot be opened "
                f"({exc.orig}); it was left untouched: restore it from a backup, or move it aside to start "
                "with an empty one"
            ) from exc
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    # -- tasks ------------------------------------------------------------------------------------
    def create_task(
        self,
        task_id: str,
        *,
        owner: str,
        model: str,
        family: str,
        parameters: dict[str, Any],
        file_urls: list[str],
    ) -> None:
        with self._session() as s:
            task = TaskRow(
                id=task_id,
                owner=owner,
                model=model,
                family=family,
                parameters=json.dumps(parameters, ensure_ascii=False),
                status=PENDING,
                submit_time=time.time(),
                attempts=0,
                cancel_requested=0,
            )
            task.files = [
                FileRow(position=i, file_url=url, status=PENDING, processed_ms=0) for i, url in enumerate(file_urls)
            ]
            s.add(task)

    def get_task(self, task_id: str) -> TaskView | None:
        with self._session() as s:
            row = s.get(TaskRow, task_id)
            return _task_view(row) if row is not None else None

    def list_tasks(
        self,
        *,
        owner: str,
        status: str | None = None,
        model: str | None = None,
        start: float | None = None,
        end: float | None = None,
        page_no: int = 1,
        page_size: int = 10,
    ) -> tuple[list[TaskView], int]:
        with self._session() as s:
            query = select(TaskRow).where(TaskRow.owner == owner)
            if status:
                query = query.where(TaskRow.status == status)
            if model:
                query = query.where(TaskRow.model == model)
            if start is not None:
                query = query.where(TaskRow.submit_time >= start)
            if end is not None:
                query = query.where(TaskRow.submit_time <= end)
            total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = s.scalars(
                query.order_by(TaskRow.submit_time.desc()).offset((page_no - 1) * page_size).limit(page_size)
            ).all()
            return [_task_view(r) for r in rows], int(total)

    def count_waiting(self) -> int:
        """Tasks not yet started (the queue length)."""
        with self._session() as s:
            return int(s.scalar(select(func.count()).where(TaskRow.status == PENDING)) or 0)

    def claim_next(self) -> str | None:
        """Atomically move the oldest PENDING task to RUNNING and return its id (None if none)."""
        with self._session() as s:
            candidates = s.scalars(
                select(TaskRow.id).where(TaskRow.status == PENDING).order_by(TaskRow.submit_time).limit(5)
            ).all()
            for task_id in candidates:
                claimed = s.execute(
                    update(TaskRow)
                    .where(TaskRow.id == task_id, TaskRow.status == PENDING)
                    .values(
                        status=RUNNING,
                        scheduled_time=func.coalesce(TaskRow.scheduled_time, time.time()),
                        attempts=TaskRow.attempts + 1,
                    )
                )
                if claimed.rowcount:  # type: ignore[attr-defined]
                    return task_id
            return None

    def requeue_interrupted(self, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> list[str]:
        """After a restart: RUNNING tasks go back to PENDING, and so do their interrupted files, except a file
        already started ``max_attempts`` times: it is FAILED with :data:`TOO_MANY_ATTEMPTS` (a file that
        crashes the process must not be retried forever)."""
        with self._session() as s:
            ids = list(s.scalars(select(TaskRow.id).where(TaskRow.status == RUNNING)).all())
            if ids:
                s.execute(update(TaskRow).where(TaskRow.id.in_(ids)).values(status=PENDING))
                interrupted = (FileRow.task_id.in_(ids), FileRow.status == RUNNING)
                s.execute(
                    update(FileRow)
                    .where(*interrupted, FileRow.attempts >= max_attempts)
                    .values(
                        status=FAILED,
                        code=TOO_MANY_ATTEMPTS,
                        message=f"the server died while recognizing this file {max_attempts} times; "
                        "it is not retried again",
                    )
                )
                s.execute(update(FileRow).where(*interrupted).values(status=PENDING, processed_ms=0))
            return ids

    def release_running(self) -> list[str]:
        """At a graceful stop: RUNNING tasks and their RUNNING files go back to PENDING and the attempt of each
        such file is not counted (the file did not fail; the server is stopping). Returns the task ids."""
        with self._session() as s:
            ids = list(s.scalars(select(TaskRow.id).where(TaskRow.status == RUNNING)).all())
            if ids:
                s.execute(
                    update(FileRow)
                    .where(FileRow.task_id.in_(ids), FileRow.status == RUNNING)
                    .values(
                        status=PENDING,
                        processed_ms=0,
                        attempts=case((FileRow.attempts > 0, FileRow.attempts - 1), else_=0),
                    )
                )
                s.execute(update(TaskRow).where(TaskRow.id.in_(ids), TaskRow.status == RUNNING).values(status=PENDING))
            return ids

    def start_file(self, task_id: str, position: int) -> str:
        """Mark a file RUNNING, count the attempt (read by :meth:`requeue_interrupted`) and return the file's
        result token: chosen at the first attempt and kept, so a file recognized again after a crash writes its
        result to the same place instead of leaving a second copy."""
        with self._session() as s:
            token = s.scalar(
                select(FileRow.result_token).where(FileRow.task_id == task_id, FileRow.position == position)
            )
            token = token or secrets.token_urlsafe(24)
            s.execute(
                update(FileRow)
                .where(FileRow.task_id == task_id, FileRow.position == position)
                .values(
                    status=RUNNING,
                    processed_ms=0,
                    code=None,
                    message=None,
                    attempts=FileRow.attempts + 1,
                    result_token=token,
                )
            )
            return token

    def file_progress(self, task_id: str, position: int, processed_ms: int, duration_ms: int | None = None) -> None:
        values: dict[str, Any] = {"processed_ms": processed_ms}
        if duration_ms is not None:
            values["duration_ms"] = duration_ms
        with self._session() as s:
            s.execute(update(FileRow).where(FileRow.task_id == task_id, FileRow.position == position).values(**values))

    def finish_file(
        self,
        task_id: str,
        position: int,
        *,
        status: str,
        code: str | None = None,
        message: str | None = None,
        duration_ms: int | None = None,
        result: tuple[str, str, float] | None = None,
        only_unfinished: bool = False,
    ) -> bool:
        """Record a file's outcome; ``result`` = (token, path, expires) registers its result file. With
        ``only_unfinished``, nothing is written (False) when the file is already finished (another node was
        first)."""
        values: dict[str, Any] = {"status": status, "code": code, "message": message}
        if duration_ms is not None:
            values["duration_ms"] = duration_ms
            values["processed_ms"] = duration_ms
        if result is not None:
            values["result_token"] = result[0]
        which = [FileRow.task_id == task_id, FileRow.position == position]
        if only_unfinished:
            which.append(FileRow.status.not_in(TERMINAL))
        with self._session() as s:
            done = s.execute(update(FileRow).where(*which).values(**values))
            if only_unfinished and not done.rowcount:  # type: ignore[attr-defined]
                return False
            if result is not None:
                token, path, expires = result
                s.merge(ResultRow(token=token, task_id=task_id, path=path, created=time.time(), expires=expires))
            return True

    def finish_task(self, task_id: str, *, status: str, code: str | None = None, message: str | None = None) -> None:
        with self._session() as s:
            s.execute(
                update(TaskRow)
                .where(TaskRow.id == task_id, TaskRow.status.not_in(TERMINAL))
                .values(status=status, code=code, message=message, end_time=time.time())
            )

    def cancel_task(self, task_id: str) -> str | None:
        """Cancel a PENDING task at once, or ask a RUNNING one to stop. Returns the status after the call."""
        with self._session() as s:
            row = s.get(TaskRow, task_id)
            if row is None:
                return None
            if row.status == PENDING:
                row.status = CANCELED
                row.end_time = time.time()
                row.code, row.message = "TaskCanceled", "the task was canceled"
                for f in row.files:
                    if f.status not in TERMINAL:
                        f.status = CANCELED
            elif row.status == RUNNING:
                row.cancel_requested = 1
            return row.status

    def cancel_requested(self, task_id: str) -> bool:
        with self._session() as s:
            return bool(s.scalar(select(TaskRow.cancel_requested).where(TaskRow.id == task_id)))

    def claim_task(self, task_id: str) -> TaskView | None:
        """Distributed backend: move a PENDING task to RUNNING (counting the attempt); the task if it is now
        RUNNING, None if it is finished or unknown."""
        with self._session() as s:
            s.execute(
                update(TaskRow)
                .where(TaskRow.id == task_id, TaskRow.status == PENDING)
                .values(
                    status=RUNNING,
                    scheduled_time=func.coalesce(TaskRow.scheduled_time, time.time()),
                    attempts=TaskRow.attempts + 1,
                )
            )
            row = s.get(TaskRow, task_id)
            return _task_view(row) if row is not None and row.status == RUNNING else None

    # -- blocks of distributed file jobs ----------------------------------------------------------
    def save_plan(self, task_id: str, position: int, plan: dict[str, Any], *, blocks: int, complete: bool) -> None:
        with self._session() as s:
            row = s.get(FilePlanRow, (task_id, position))
            if row is None:
                row = FilePlanRow(task_id=task_id, position=position)
                s.add(row)
            row.plan = json.dumps(plan, ensure_ascii=False)
            row.blocks = blocks
            row.complete = int(complete)

    def get_plan(self, task_id: str, position: int) -> PlanView | None:
        with self._session() as s:
            row = s.get(FilePlanRow, (task_id, position))
            return PlanView(json.loads(row.plan), row.blocks, bool(row.complete)) if row is not None else None

    def add_block(self, task_id: str, position: int, channel: int, block: int, start: int, end: int) -> bool:
        """Register a block (once; a second call keeps the first row). True when it is already decoded."""
        key = (task_id, position, channel, block)
        try:
            with self._session() as s:
                row = s.get(BlockRow, key)
                if row is not None:
                    return row.status == SUCCEEDED
                s.add(
                    BlockRow(
                        task_id=task_id,
                        position=position,
                        channel=channel,
                        block=block,
                        start_sample=start,
                        end_sample=end,
                        status=PENDING,
                        attempts=0,
                    )
                )
                return False
        except IntegrityError:  # registered at the same moment by a redelivered planning task
            with self._session() as s:
                return s.get(BlockRow, key) is not None and s.get(BlockRow, key).status == SUCCEEDED  # type: ignore[union-attr]

    def start_block(self, task_id: str, position: int, channel: int, block: int) -> BlockView | None:
        """Count a decoding attempt of a block not yet decoded; its row after the count (None if unknown)."""
        key = (task_id, position, channel, block)
        with self._session() as s:
            s.execute(
                update(BlockRow)
                .where(*_undecoded_block(task_id, position, channel, block))
                .values(attempts=BlockRow.attempts + 1)
            )
            row = s.get(BlockRow, key)
            return _block_view(row) if row is not None else None

    def finish_block(
        self,
        task_id: str,
        position: int,
        channel: int,
        block: int,
        *,
        worker: str,
        sentences: str,
        speakers: bytes | None,
    ) -> bool:
        """Store a block's result once: False when another worker's result was stored first (kept as is)."""
        with self._session() as s:
            done = s.execute(
                update(BlockRow)
                .where(*_undecoded_block(task_id, position, channel, block))
                .values(status=SUCCEEDED, worker=worker, sentences=sentences, speakers=speakers, decoded_at=time.time())
            )
            return bool(done.rowcount)  # type: ignore[attr-defined]

    def blocks(self, task_id: str, position: int) -> list[BlockView]:
        """The blocks of a file in order (channel, then time)."""
        with self._session() as s:
            rows = s.scalars(
                select(BlockRow)
                .where(BlockRow.task_id == task_id, BlockRow.position == position)
                .order_by(BlockRow.channel, BlockRow.block)
            ).all()
            return [_block_view(r) for r in rows]

    def decoded_samples(self, task_id: str, position: int) -> tuple[int, int]:
        """(blocks decoded, samples they cover) of a file."""
        with self._session() as s:
            count, samples = s.execute(
                select(func.count(), func.coalesce(func.sum(BlockRow.end_sample - BlockRow.start_sample), 0)).where(
                    BlockRow.task_id == task_id, BlockRow.position == position, BlockRow.status == SUCCEEDED
                )
            ).one()
            return int(count), int(samples)

    def drop_block_payloads(self, task_id: str, position: int) -> None:
        """After assembly: keep who decoded which block, drop the sentences and embeddings."""
        with self._session() as s:
            s.execute(
                update(BlockRow)
                .where(BlockRow.task_id == task_id, BlockRow.position == position)
                .values(sentences=None, speakers=None)
            )

    # -- results ----------------------------------------------------------------------------------
    def result_path(self, token: str, now: float | None = None) -> str | None:
        """The stored result file of ``token`` if it exists and has not expired."""
        with self._session() as s:
            row = s.get(ResultRow, token)
            if row is None or row.expires <= (now or time.time()):
                return None
            return row.path

    def expire(self, now: float | None = None) -> list[str]:
        """Drop expired results (returning their paths to delete) and finished tasks older than them."""
        now = now or time.time()
        with self._session() as s:
            rows = s.scalars(select(ResultRow).where(ResultRow.expires <= now)).all()
            paths = [r.path for r in rows]
            task_ids = {r.task_id for r in rows}
            s.execute(delete(ResultRow).where(ResultRow.expires <= now))
            if task_ids:
                still_served = set(s.scalars(select(ResultRow.task_id).where(ResultRow.task_id.in_(task_ids))).all())
                gone = [t for t in task_ids if t not in still_served]
                if gone:
                    _delete_blocks(s, gone)
                    s.execute(delete(FileRow).where(FileRow.task_id.in_(gone)))
                    s.execute(delete(TaskRow).where(TaskRow.id.in_(gone), TaskRow.status.in_(TERMINAL)))
            return paths

    def unreferenced_tokens(self, tokens: Iterable[str]) -> set[str]:
        """Those of ``tokens`` that neither a served result nor an unfinished file holds."""
        wanted = set(tokens)
        if not wanted:
            return set()
        with self._session() as s:
            served = set(s.scalars(select(ResultRow.token).where(ResultRow.token.in_(wanted))).all())
            pending = set(
                s.scalars(
                    select(FileRow.result_token).where(
                        FileRow.result_token.in_(wanted), FileRow.status.not_in(TERMINAL)
                    )
                ).all()
            )
        return wanted - served - pending

    def expire_tasks_without_results(self, older_than: float) -> int:
        """Forget finished tasks without result files that ended before ``older_than``."""
        with self._session() as s:
            ids = list(
                s.scalars(select(TaskRow.id).where(TaskRow.status.in_(TERMINAL), TaskRow.end_time < older_than)).all()
            )
            if not ids:
                return 0
            served = set(s.scalars(select(ResultRow.task_id).where(ResultRow.task_id.in_(ids))).all())
            gone = [t for t in ids if t not in served]
            if gone:
                _delete_blocks(s, gone)
                s.execute(delete(FileRow).where(FileRow.task_id.in_(gone)))
                s.execute(delete(TaskRow).where(TaskRow.id.in_(gone)))
            return len(gone)

    # -- vocabularies -----------------------------------------------------------------------------
    def create_vocabulary(
        self, vocabulary_id: str, *, owner: str, prefix: str, target_model: str, items: list[dict[str, Any]]
    ) -> None:
        now = time.time()
        with self._session() as s:
            s.add(
                VocabularyRow(
                    id=vocabulary_id,
                    owner=owner,
                    prefix=prefix,
                    target_model=target_model,
                    items=json.dumps(items, ensure_ascii=False),
                    created=now,
                    modified=now,
                )
            )

    def get_vocabulary(self, vocabulary_id: str, owner: str | None = None) -> VocabularyView | None:
        with self._session() as s:
            row = s.get(VocabularyRow, vocabulary_id)
            if row is None or (owner is not None and row.owner != owner):
                return None
            return _vocabulary_view(row)

    def list_vocabularies(
        self, *, owner: str, prefix: str | None, page_index: int, page_size: int
    ) -> list[VocabularyView]:
        with self._session() as s:
            query = select(VocabularyRow).where(VocabularyRow.owner == owner)
            if prefix:
                query = query.where(VocabularyRow.prefix == prefix)
            rows = s.scalars(
                query.order_by(VocabularyRow.created.desc(), VocabularyRow.id)
                .offset(page_index * page_size)
                .limit(page_size)
            ).all()
            return [_vocabulary_view(r) for r in rows]

    def update_vocabulary(self, vocabulary_id: str, *, owner: str, items: list[dict[str, Any]]) -> bool:
        with self._session() as s:
            done = s.execute(
                update(VocabularyRow)
                .where(VocabularyRow.id == vocabulary_id, VocabularyRow.owner == owner)
                .values(items=json.dumps(items, ensure_ascii=False), modified=time.time())
            )
        return bool(done.rowcount)  # type: ignore[attr-defined]

    def delete_vocabulary(self, vocabulary_id: str, *, owner: str) -> bool:
        with self._session() as s:
            done = s.execute(
                delete(VocabularyRow).where(VocabularyRow.id == vocabulary_id, VocabularyRow.owner == owner)
            )
        return bool(done.rowcount)  # type: ignore[attr-defined]

    def hotwords(self, vocabulary_id: str, owner: str | None = None) -> list[Hotword] | None:
        """The :class:`VocabularyLookup` protocol: hotwords of a vocabulary (None when missing or, with
        ``owner``, when another key owns it). Read from the database at each call (one primary-key lookup, no
        per-process cache), so a vocabulary created, updated or deleted through any node applies everywhere
        from the next request on."""
        view = self.get_vocabulary(vocabulary_id, owner)
        if view is None:
            return None
        return [Hotword(text=i["text"], weight=int(i.get("weight", 4)), lang=i.get("lang")) for i in view.items]

    # -- shared secrets ---------------------------------------------------------------------------
    def shared_secret(self, name: str) -> str:
        """The random secret (64 hex digits) stored as ``name``: created by the first process that asks, the
        same for every process on this database (a simultaneous first start settles on one row)."""
        with self._session() as s:
            row = s.get(SecretRow, name)
            if row is not None:
                return row.value
        try:
            with self._session() as s:
                s.add(SecretRow(name=name, value=secrets.token_hex(32)))
        except IntegrityError:
            pass  # another process created it first: read theirs
        with self._session() as s:
            row = s.get(SecretRow, name)
            if row is None:
                raise RuntimeError(f"the shared secret {name!r} could not be stored")
            return row.value
