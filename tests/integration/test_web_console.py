"""The web console at ``/`` in a real browser (Debian's Chromium driven by Playwright) against a real server.

Chromium's fake microphone plays a real recording (``--use-file-for-fake-audio-capture``); the page streams it
over the run-task WebSocket exactly as it would a user's microphone. Screenshots of each view are written to
docs/screenshots/.
"""

from __future__ import annotations

import base64
import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, WebSocketRoute, sync_playwright

from tests.conftest import API_KEY, ROOT, RunningServer, audio_file, join_wavs, synth, wer

SCREENSHOTS = ROOT / "docs" / "screenshots"
BECKETT = "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better."
DESKTOP = {"width": 1100, "height": 760}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def microphone_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fake microphone's recording: real read speech, then 4 s of silence (played once, not looped)."""
    return join_wavs([audio_file("beckett_16k.wav")], tmp_path_factory.mktemp("mic") / "mic.wav", pause_s=4.0)


@pytest.fixture(scope="module")
def browser(microphone_wav: Path) -> Iterator[Browser]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise RuntimeError("Chromium is required for the console tests (make install installs Debian's chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-quic",
                "--no-first-run",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={microphone_wav}%noloop",
            ],
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, server: RunningServer) -> Iterator[Page]:
    """The console with the API key already entered; fails the test on any script error (CSP included)."""
    context = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    context.add_init_script(f"sessionStorage.setItem('voxgate.apiKey', '{API_KEY}')")
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.on(
        "console",
        lambda message: (
            errors.append(message.text)
            if message.type == "error" and "Content Security Policy" in message.text
            else None
        ),
    )
    opened.goto(server.url + "/")
    opened.wait_for_selector("body[data-ready=true]")
    yield opened
    context.close()
    assert errors == []


def poll(check: Callable[[], Any], timeout: float, what: str, page: Page | None = None) -> Any:
    """``check()`` until truthy. Pass ``page`` when only Playwright event handlers can make it true: waiting
    through the page lets them run (a plain sleep would hold them back)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if page is not None:
            page.wait_for_timeout(100)
        else:
            time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


CONTRAST_JS = """() => {
  const parse = (c) => {
    const m = c.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const p = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
    return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
  };
  const channel = (v) => ((v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
  const lum = (c) => 0.2126 * channel(c.r) + 0.7152 * channel(c.g) + 0.0722 * channel(c.b);
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c.a > 0.9) return c;
    }
    return { r: 255, g: 255, b: 255, a: 1 };
  };
  const low = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode;
    const el = node.parentElement;
    if (!node.textContent.trim() || !el.checkVisibility() || el.closest("[disabled]")) continue;
    const style = getComputedStyle(el);
    const a = lum(parse(style.color));
    const b = lum(background(el));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) low.push(`${node.textContent.trim().slice(0, 30)}: ${ratio.toFixed(2)}`);
  }
  return low;
}"""

UNLABELLED_JS = """() => [...document.querySelectorAll("button, input, select, textarea, meter, progress")]
  .filter((el) => el.type !== "hidden" && !(el.labels && el.labels.length) && !el.getAttribute("aria-label")
    && !el.textContent.trim())
  .map((el) => el.outerHTML.slice(0, 80))"""


def assert_accessible(page: Page) -> None:
    """Every control has a label and all visible text meets WCAG AA contrast (4.5:1, large text 3:1)."""
    assert page.evaluate(UNLABELLED_JS) == []
    assert page.evaluate(CONTRAST_JS) == []


def assert_fits_phone(page: Page, screenshot: str | None = None) -> None:
    """At phone width the view needs no horizontal scrolling."""
    page.set_viewport_size(PHONE)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    if screenshot:
        shot(page, screenshot)
    page.set_viewport_size(DESKTOP)


def shot(page: Page, name: str, full_page: bool = True) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=full_page)


def upload(page: Page, path: Path, *, drop: bool = False) -> None:
    """Choose (or drag and drop) a file in the Files view and wait for its transcript."""
    before = page.get_attribute("#viewer", "data-task-id")
    if drop:
        transfer = page.evaluate_handle(
            """([b64, name]) => {
                const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                const transfer = new DataTransfer();
                transfer.items.add(new File([bytes], name, { type: "audio/wav" }));
                return transfer;
            }""",
            [base64.b64encode(path.read_bytes()).decode(), path.name],
        )
        page.dispatch_event("#dropzone", "dragover", {"dataTransfer": transfer})
        assert "over" in (page.get_attribute("#dropzone", "class") or "")
        page.dispatch_event("#dropzone", "drop", {"dataTransfer": transfer})
    else:
        page.set_input_files("#file-input", str(path))
    try:
        poll(lambda: page.get_attribute("#viewer", "data-task-id") not in (None, before), 120, "a transcript")
    except AssertionError as exc:
        raise AssertionError(
            f"{path.name}: {page.inner_text('#file-status')} {page.inner_text('#file-alert')}"
        ) from exc


def test_console_is_served_with_its_assets(page: Page, server: RunningServer) -> None:
    assert page.title() == "voxgate console"
    models = page.eval_on_selector_all("#live-model option", "options => options.map(o => o.value)")
    assert "fun-asr-realtime" in models and "fun-asr" not in models and "fun-asr-flash-8k-realtime" not in models
    assert "qwen3-asr-flash-realtime" in models and page.input_value("#live-model") == "fun-asr-realtime"
    assert page.evaluate("fetch('/console/console.py').then(r => r.status)") == 404
    # keyboard: the tabs follow the arrow keys
    page.focus("#tab-live")
    page.keyboard.press("ArrowRight")
    assert page.get_attribute("#tab-files", "aria-selected") == "true" and page.is_visible("#dropzone")


def test_live_view_shows_interim_then_final_captions(page: Page) -> None:
    page.select_option("#live-language", "en")
    page.check("#live-diarization")
    with page.expect_response(lambda response: "/api/v1/tokens" in response.url) as token_answer:
        page.click("#live-toggle")
    # the page traded the key for a temporary one before opening the WebSocket
    assert token_answer.value.status == 200 and token_answer.value.json()["token"].startswith("st-")
    interims: list[tuple[float, str]] = []
    first_final: float | None = None
    captured = False
    started = time.monotonic()
    while time.monotonic() - started < 40:
        now = time.monotonic() - started
        interim = page.inner_text("#live-interim").strip()
        if interim and (not interims or interims[-1][1] != interim):
            interims.append((now, interim))
        finals = page.locator("#live-finals li .text").all_inner_texts()
        if finals and first_final is None:
            first_final = now
        if finals and interim and not captured:
            shot(page, "live.png", full_page=False)
            captured = True
        if len(" ".join(finals).split()) >= 12:
            break
        time.sleep(0.1)
    page.click("#live-toggle")
    poll(lambda: page.inner_text("#live-status").startswith("Stopped"), 30, "the session to stop")
    if not captured:
        shot(page, "live.png", full_page=False)
    assert_accessible(page)
    assert_fits_phone(page)
    finals = page.locator("#live-finals li .text").all_inner_texts()
    assert first_final is not None and interims, (interims, finals)
    assert interims[0][0] < first_final, "an interim hypothesis is shown before the first final"
    text = " ".join(finals)
    assert wer(BECKETT, text) <= 0.25, text
    lags = [float(t.split()[1]) for t in page.locator("#live-finals .lag").all_inner_texts()]
    assert len(lags) == len(finals) and all(0 < lag < 10 for lag in lags), lags
    assert "Median final lag" in page.inner_text("#live-status")
    assert page.is_hidden("#live-alert")
    # speaker labels were asked for: one reader, one label on every final
    assert page.locator("#live-finals .speaker").all_inner_texts() == ["Speaker 1"] * len(finals)


def test_live_view_on_the_session_protocol(page: Page) -> None:
    """A Qwen-ASR model streams over /api-ws/v1/realtime (base64 audio in JSON events) with the same captions."""
    page.select_option("#live-model", "qwen3-asr-flash-realtime")
    page.select_option("#live-language", "en")
    with page.expect_websocket() as opened:
        page.click("#live-toggle")
    assert "/api-ws/v1/realtime?model=qwen3-asr-flash-realtime" in opened.value.url
    interims: list[str] = []
    started = time.monotonic()
    while time.monotonic() - started < 40:
        interim = page.inner_text("#live-interim").strip()
        if interim:
            interims.append(interim)
        if len(" ".join(page.locator("#live-finals li .text").all_inner_texts()).split()) >= 12:
            break
        time.sleep(0.1)
    page.click("#live-toggle")
    poll(lambda: page.inner_text("#live-status").startswith("Stopped"), 30, "the session to stop")
    finals = page.locator("#live-finals li .text").all_inner_texts()
    assert interims and wer(BECKETT, " ".join(finals)) <= 0.25, (interims, finals)
    starts = [t.split("–")[0] for t in page.locator("#live-finals .time").all_inner_texts()]
    assert starts == sorted(starts) and starts[-1] != "0:00.0", starts
    assert page.is_hidden("#live-alert")


def test_wrong_key_is_asked_for_again_and_refusals_are_explained(browser: Browser, server: RunningServer) -> None:
    context = browser.new_context(viewport=DESKTOP)
    context.add_init_script("sessionStorage.setItem('voxgate.apiKey', 'sk-wrong')")
    page = context.new_page()
    page.goto(server.url + "/")
    dialog = page.locator("#key-dialog")
    dialog.wait_for(state="visible")  # the vocabulary list was refused: the page asks for a key
    page.click("#key-dialog button[value=cancel]")
    poll(lambda: "Cannot list vocabularies" in (page.text_content("#vocab-alert") or ""), 10, "the refused list")
    page.click("#tab-live")
    page.click("#live-toggle")

    def refused() -> bool:
        if dialog.is_visible():
            page.click("#key-dialog button[value=cancel]")
        return page.is_visible("#live-alert") and page.inner_text("#live-status") == "Stopped."

    poll(refused, 20, "the refusal message")
    assert "refused" in page.inner_text("#live-alert") and "API key" in page.inner_text("#live-alert")
    assert page.inner_text("#live-toggle") == "Start recording"
    page.click("#key-button")
    page.fill("#key-input", API_KEY)
    page.click("#key-dialog button[value=save]")
    # the dialog's close handler stores the key: wait for it rather than read at once
    poll(lambda: page.evaluate("sessionStorage.getItem('voxgate.apiKey')") == API_KEY, 10, "the saved key")
    assert page.inner_text("#key-button") == "API key ✓"
    context.close()


def test_live_view_reports_throttling_and_reconnects_after_a_lost_connection(page: Page) -> None:
    """The first connection is answered as a full server would (task-failed Throttling); the second is the real
    server, cut from the server side after the first final; the third carries on. Nothing said is lost."""
    connections: list[int] = []

    def route(ws: WebSocketRoute) -> None:
        connections.append(len(connections) + 1)
        if len(connections) == 1:

            def refuse(message: str | bytes) -> None:
                if isinstance(message, str) and json.loads(message)["header"]["action"] == "run-task":
                    task_id = json.loads(message)["header"]["task_id"]
                    header = {
                        "task_id": task_id,
                        "event": "task-failed",
                        "error_code": "Throttling",
                        "error_message": "real-time capacity is full",
                        "attributes": {},
                    }
                    ws.send(json.dumps({"header": header, "payload": {}}))
                    ws.close()

            ws.on_message(refuse)
        elif len(connections) == 2:
            upstream = ws.connect_to_server()

            def cut_after_first_final(message: str | bytes) -> None:
                ws.send(message)
                if isinstance(message, str):
                    event = json.loads(message)
                    if (
                        event["header"]["event"] == "result-generated"
                        and event["payload"]["output"]["sentence"]["end_time"] is not None
                    ):
                        ws.close(code=1011, reason="server restart")

            upstream.on_message(cut_after_first_final)
        else:
            ws.connect_to_server()

    page.route_web_socket("**/api-ws/v1/inference", route)
    page.select_option("#live-language", "en")
    page.click("#live-toggle")
    alerts: list[str] = []
    started = time.monotonic()
    while time.monotonic() - started < 40:
        alert = page.inner_text("#live-alert") if page.is_visible("#live-alert") else ""
        if alert and (not alerts or alerts[-1] != alert):
            alerts.append(alert)
        if len(" ".join(page.locator("#live-finals li .text").all_inner_texts()).split()) >= 12:
            break
        time.sleep(0.1)
    page.click("#live-toggle")
    poll(lambda: page.inner_text("#live-status").startswith("Stopped"), 30, "the session to stop")
    assert connections == [1, 2, 3]
    assert alerts[0].startswith("The server is at capacity (Throttling): real-time capacity is full.")
    assert "Reconnecting in 1 s (attempt 1 of 5)" in alerts[0]
    assert any(a.startswith("Connection lost (code 1011). Reconnecting in") for a in alerts), alerts
    assert alerts[-1] == "Reconnected; captions continue.", alerts
    finals = page.locator("#live-finals li .text").all_inner_texts()
    assert wer(BECKETT, " ".join(finals)) <= 0.25, finals
    starts = [t.split("–")[0] for t in page.locator("#live-finals .time").all_inner_texts()]
    assert starts == sorted(starts), starts


def test_file_upload_transcript_seek_search_and_download(page: Page, server: RunningServer) -> None:
    page.click("#tab-files")
    page.select_option("#file-language", "en")
    upload(page, audio_file("beckett_16k.wav"))
    assert page.inner_text("#file-status").startswith("Done")
    assert page.get_attribute("#upload-progress", "value") == "100"
    task_id = page.get_attribute("#viewer", "data-task-id")
    progress = httpx.get(
        f"{server.url}/console/api/tasks/{task_id}/progress", headers={"Authorization": f"Bearer {API_KEY}"}
    ).json()
    assert progress["status"] == "SUCCEEDED" and progress["processed_ms"] == progress["duration_ms"] > 9000
    words = page.locator("#transcript .word").all_inner_texts()
    assert wer(BECKETT, " ".join(words)) <= 0.25, words
    poll(lambda: page.evaluate("document.getElementById('player').readyState >= 1"), 10, "the audio to load")
    word = page.locator("#transcript .word", has_text="matter").first
    begin_s = float(word.get_attribute("data-begin") or "nan") / 1000
    assert begin_s > 1.0
    word.click()
    current = poll(lambda: page.evaluate("document.getElementById('player').currentTime") or None, 5, "a seek")
    assert abs(current - begin_s) < 0.05
    poll(lambda: "current" in (word.get_attribute("class") or ""), 5, "the word being played to be highlighted")
    page.fill("#search", "fail")
    assert page.inner_text("#search-count") in ("2 matches", "3 matches")
    assert page.locator("#transcript .word.match").count() >= 2
    with page.expect_download() as download_info:
        page.click(".downloads button[data-format=srt]")
    srt = Path(download_info.value.path()).read_text()
    assert download_info.value.suggested_filename == "beckett_16k.srt"
    assert srt.startswith("1\n00:00:00,") and " --> " in srt and "matter" in srt.lower()
    shot(page, "files.png")
    assert_accessible(page)
    page.set_viewport_size(PHONE)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    shot(page, "files-phone.png")


def test_dropped_file_diarized_transcript_has_speaker_colours(page: Page) -> None:
    page.click("#tab-files")
    page.select_option("#file-language", "en")
    page.check("#file-diarization")
    upload(page, audio_file("endgame_nagg_nell_16k.wav"), drop=True)
    rows = page.locator("#transcript .sentence")
    speakers = {c for c in (rows.nth(i).get_attribute("class") or "" for i in range(rows.count())) if "speaker-" in c}
    assert len(speakers) >= 2, speakers
    labels = set(page.locator("#transcript .speaker").all_inner_texts())
    assert {"Speaker 1", "Speaker 2"} <= labels, labels
    shot(page, "files-speakers.png")
    assert_accessible(page)


def test_file_errors_are_shown(page: Page, tmp_path: Path) -> None:
    page.click("#tab-files")
    notes = tmp_path / "notes.wav"
    notes.write_text("not audio at all\n" * 100)
    page.set_input_files("#file-input", str(notes))
    poll(lambda: page.is_visible("#file-alert"), 60, "the failed job's message")
    assert page.inner_text("#file-status") == "Failed."
    assert "InvalidFile" in page.inner_text("#file-alert") or "audio" in page.inner_text("#file-alert").lower()
    page.fill("#file-url", "http://127.0.0.1:9/private.wav")
    page.click("#url-form button")
    poll(lambda: "loopback" in page.inner_text("#file-alert"), 60, "the refused URL's message")


def test_vocabulary_created_in_the_page_changes_a_job(page: Page, tmp_path: Path) -> None:
    names = synth("We deployed the Xylantrix cluster in the Tolkarov region.", tmp_path / "names.wav")
    page.click("#tab-files")
    page.select_option("#file-language", "en")
    upload(page, names)
    plain = page.inner_text("#transcript").lower()
    assert "xylantrix" not in plain

    page.click("#tab-vocab")
    page.fill("#vocab-prefix", "browser")
    page.fill("#vocab-terms", "Xylantrix, 5\nTolkarov, 5")
    page.click("#vocab-save")
    row = page.locator("#vocab-table tbody tr", has_text="vocab-browser-")
    row.wait_for()
    vocabulary_id = row.locator("td.id").inner_text()
    assert "Xylantrix, Tolkarov" in row.inner_text()
    shot(page, "vocabularies.png")
    assert_accessible(page)
    assert_fits_phone(page, "vocabularies-phone.png")
    row.get_by_role("button", name=f"Use {vocabulary_id}").click()
    assert page.input_value("#live-vocab") == vocabulary_id

    # a live session started now asks for the vocabulary (the run-task is read by a stand-in server)
    run_tasks: list[dict[str, Any]] = []

    def stand_in(ws: WebSocketRoute) -> None:
        def answer(message: str | bytes) -> None:
            if isinstance(message, bytes):
                return
            header = json.loads(message)["header"]
            if header["action"] == "run-task":
                run_tasks.append(json.loads(message)["payload"])
            event = {"run-task": "task-started", "finish-task": "task-finished"}[header["action"]]
            ws.send(json.dumps({"header": {"task_id": header["task_id"], "event": event}, "payload": {"output": {}}}))

        ws.on_message(answer)

    page.route_web_socket("**/api-ws/v1/inference", stand_in)
    page.click("#tab-live")
    page.click("#live-toggle")
    poll(lambda: run_tasks, 10, "the run-task", page)
    page.click("#live-toggle")
    poll(lambda: page.inner_text("#live-status").startswith("Stopped"), 10, "the session to stop")
    assert run_tasks[0]["parameters"]["vocabulary_id"] == vocabulary_id

    page.click("#tab-files")
    assert page.input_value("#file-vocab") == vocabulary_id
    upload(page, names)
    biased = page.inner_text("#transcript").lower()
    assert "xylantrix" in biased and "tolkarov" in biased, biased

    # edit, then delete (confirming the dialog): the list and the pickers follow
    page.click("#tab-vocab")
    row.get_by_role("button", name=f"Edit {vocabulary_id}").click()
    page.fill("#vocab-terms", "Xylantrix, 4")
    page.click("#vocab-save")
    page.locator("#vocab-table tbody tr", has_text="Xylantrix").filter(has_not_text="Tolkarov").wait_for()
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name=f"Delete {vocabulary_id}").click()
    row.wait_for(state="detached")
    assert page.input_value("#file-vocab") == ""


def test_websocket_key_as_subprotocol(server: RunningServer) -> None:
    """How the page authenticates its WebSocket: the key as subprotocol ``voxgate.key.<hex>``."""
    import websocket

    url = server.ws_url + "/api-ws/v1/inference"
    offered = ["voxgate", "voxgate.key." + API_KEY.encode().hex()]
    ws = websocket.create_connection(url, subprotocols=offered, timeout=10)
    try:
        assert ws.getsubprotocol() == "voxgate"
        run = {
            "header": {"action": "run-task", "task_id": "t1", "streaming": "duplex"},
            "payload": {
                "task_group": "audio",
                "task": "asr",
                "function": "recognition",
                "model": "fun-asr-realtime",
                "parameters": {"format": "pcm", "sample_rate": 16000},
                "input": {},
            },
        }
        ws.send(json.dumps(run))
        assert json.loads(ws.recv())["header"]["event"] == "task-started"
    finally:
        ws.close()
    wrong = ["voxgate", "voxgate.key." + b"sk-wrong".hex()]
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(url, subprotocols=wrong, timeout=10)
    assert refused.value.status_code == 401
