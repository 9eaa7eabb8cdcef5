// Files view: a dropped/chosen file (uploaded through the DashScope upload flow) or a URL becomes a file job;
// its progress is polled; the result opens in a transcript viewer tied to an audio player.

import { getJson, localResultPath, postJson, request, uploadFile } from "./api.js";
import { download, render, sentencesOf, shortClock } from "./format.js";

const TERMINAL = new Set(["SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN"]);

export function setupFiles(el) {
  let result = null;
  let sourceName = "transcript";
  let wordSpans = [];
  let current = null;
  let matches = [];
  let matchIndex = -1;
  let busy = false;

  const status = (text) => (el.status.textContent = text);
  function alertBox(text) {
    el.alert.hidden = !text;
    el.alert.textContent = text || "";
  }

  function parameters() {
    const params = {};
    if (el.language.value) params.language_hints = [el.language.value];
    if (el.vocab.value) params.vocabulary_id = el.vocab.value;
    if (el.diarization.checked) params.diarization_enabled = true;
    return params;
  }

  async function transcribe(fileUrl) {
    const submitted = await postJson(
      "/api/v1/services/audio/asr/transcription",
      { model: el.model.value, input: { file_urls: [fileUrl] }, parameters: parameters() },
      { "X-DashScope-Async": "enable" },
    );
    const taskId = submitted.output.task_id;
    const began = performance.now();
    for (;;) {
      const task = (await getJson(`/api/v1/tasks/${encodeURIComponent(taskId)}`)).output;
      let detail = "";
      try {
        const progress = await getJson(`/console/api/tasks/${encodeURIComponent(taskId)}/progress`);
        if (progress.duration_ms) {
          el.jobProgress.value = Math.min(100, (100 * progress.processed_ms) / progress.duration_ms);
          detail = ` ${shortClock(progress.processed_ms)} of ${shortClock(progress.duration_ms)} decoded.`;
        }
      } catch {
        /* progress is a nicety */
      }
      const seconds = ((performance.now() - began) / 1000).toFixed(0);
      status(`Task ${task.task_status.toLowerCase()} (${seconds} s).${detail}`);
      if (TERMINAL.has(task.task_status)) return task;
      await new Promise((resolve) => setTimeout(resolve, 700));
    }
  }

  async function run(fileUrl, label) {
    const task = await transcribe(fileUrl);
    const item = (task.results || [])[0] || {};
    if (task.task_status !== "SUCCEEDED" || !item.transcription_url) {
      const code = item.code || task.code || task.task_status;
      throw new Error(`${code}: ${item.message || task.message || "the task did not succeed"}`);
    }
    el.jobProgress.value = 100;
    const response = await request(localResultPath(item.transcription_url));
    result = await response.json();
    sourceName = label.replace(/\.[^.]+$/, "") || "transcript";
    showTranscript();
    el.viewer.dataset.taskId = task.task_id;
    const count = el.transcript.querySelectorAll(".sentence").length;
    status(`Done: ${count} sentence${count === 1 ? "" : "s"} from ${label}.`);
  }

  async function guarded(work) {
    if (busy) return;
    busy = true;
    alertBox("");
    el.uploadProgress.value = 0;
    el.jobProgress.value = 0;
    el.jobProgress.removeAttribute("value"); // indeterminate until progress is known
    try {
      await work();
    } catch (error) {
      alertBox(error.message || String(error));
      status("Failed.");
      el.jobProgress.value = 0;
    } finally {
      busy = false;
    }
  }

  function takeFile(file) {
    if (!file) return;
    guarded(async () => {
      el.player.src = URL.createObjectURL(file);
      status(`Uploading ${file.name}…`);
      const url = await uploadFile(file, el.model.value, (fraction) => {
        el.uploadProgress.value = Math.round(fraction * 100);
        status(`Uploading ${file.name}: ${Math.round(fraction * 100)} %`);
      });
      await run(url, file.name);
    });
  }

  function takeUrl(url) {
    guarded(async () => {
      el.player.src = url;
      el.uploadProgress.value = 100;
      status("Submitting…");
      await run(url, new URL(url).pathname.split("/").pop() || "transcript");
    });
  }

  // -- viewer ------------------------------------------------------------------------------------
  function showTranscript() {
    el.viewer.hidden = false;
    el.transcript.replaceChildren();
    wordSpans = [];
    for (const sentence of sentencesOf(result)) {
      const row = document.createElement("div");
      row.className = "sentence";
      const seek = document.createElement("button");
      seek.type = "button";
      seek.className = "seek";
      seek.textContent = shortClock(sentence.begin_time);
      seek.setAttribute("aria-label", `Play from ${shortClock(sentence.begin_time)}`);
      seek.addEventListener("click", () => seekTo(sentence.begin_time, true));
      const body = document.createElement("p");
      body.className = "body";
      if (sentence.speaker_id !== undefined && sentence.speaker_id !== null) {
        row.classList.add(`speaker-${sentence.speaker_id % 6}`);
        const speaker = document.createElement("span");
        speaker.className = `speaker speaker-${sentence.speaker_id % 6}`;
        speaker.textContent = `Speaker ${sentence.speaker_id + 1}`;
        body.append(speaker, " ");
      }
      const words = sentence.words && sentence.words.length ? sentence.words : null;
      if (words) {
        for (const word of words) {
          const lead = word.text.match(/^\s*/)[0];
          if (lead) body.append(lead);
          const span = document.createElement("span");
          span.className = "word";
          span.dataset.begin = word.begin_time;
          span.dataset.end = word.end_time;
          span.textContent = word.text.trimStart();
          body.append(span);
          if (word.punctuation) body.append(word.punctuation);
          if (!/^[\u3000-\u9fff\uac00-\ud7af]/.test(word.text) && !lead) body.append(" ");
          wordSpans.push(span);
        }
      } else {
        body.append(sentence.text);
      }
      row.append(seek, body);
      el.transcript.append(row);
    }
    applySearch();
  }

  function seekTo(ms, play = false) {
    el.player.currentTime = ms / 1000;
    if (play) el.player.play().catch(() => {});
  }

  function highlight() {
    const ms = el.player.currentTime * 1000;
    let found = null;
    for (const span of wordSpans) {
      if (Number(span.dataset.begin) <= ms && ms < Number(span.dataset.end)) {
        found = span;
        break;
      }
    }
    if (found === current) return;
    if (current) current.classList.remove("current");
    if (found) found.classList.add("current");
    current = found;
  }

  const norm = (text) => text.toLowerCase().replace(/[^\p{L}\p{N}']+/gu, "");

  function applySearch() {
    for (const span of matches) span.classList.remove("match");
    matches = [];
    matchIndex = -1;
    const terms = el.search.value.split(/\s+/).map(norm).filter(Boolean);
    if (!terms.length) {
      el.searchCount.textContent = "";
      return;
    }
    const words = wordSpans.map((span) => norm(span.textContent));
    for (let i = 0; i + terms.length <= words.length; i++) {
      const last = terms.length - 1;
      const hit = terms.every((t, k) => (k === last ? words[i + k].startsWith(t) : words[i + k] === t));
      if (hit) for (let k = 0; k < terms.length; k++) matches.push(wordSpans[i + k]);
    }
    for (const span of matches) span.classList.add("match");
    const count = matches.length && matches.length / terms.length;
    el.searchCount.textContent = `${count} match${count === 1 ? "" : "es"}`;
  }

  function nextMatch() {
    if (!matches.length) return;
    matchIndex = (matchIndex + 1) % matches.length;
    const span = matches[matchIndex];
    span.scrollIntoView({ block: "center" });
    seekTo(Number(span.dataset.begin));
  }

  // -- wiring ------------------------------------------------------------------------------------
  el.input.addEventListener("change", () => {
    takeFile(el.input.files[0]);
    el.input.value = ""; // choosing the same file again starts a new job
  });
  for (const name of ["dragenter", "dragover"]) {
    el.dropzone.addEventListener(name, (event) => {
      event.preventDefault();
      el.dropzone.classList.add("over");
    });
  }
  for (const name of ["dragleave", "drop"]) {
    el.dropzone.addEventListener(name, () => el.dropzone.classList.remove("over"));
  }
  el.dropzone.addEventListener("drop", (event) => {
    event.preventDefault();
    takeFile(event.dataTransfer.files[0]);
  });
  el.urlForm.addEventListener("submit", (event) => {
    event.preventDefault();
    takeUrl(el.url.value.trim());
  });
  el.transcript.addEventListener("click", (event) => {
    const span = event.target.closest(".word");
    if (span) seekTo(Number(span.dataset.begin));
  });
  el.player.addEventListener("timeupdate", highlight);
  el.player.addEventListener("seeked", highlight);
  el.search.addEventListener("input", applySearch);
  el.search.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      nextMatch();
    }
  });
  for (const button of el.downloads) {
    button.addEventListener("click", () => {
      if (!result) return;
      const format = button.dataset.format;
      const { text, type } = render(result, format);
      download(`${sourceName}.${format}`, text, type);
    });
  }
}
