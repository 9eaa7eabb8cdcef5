// Live view: microphone → 16 kHz pcm16 over the run-task WebSocket (/api-ws/v1/inference); interim text
// greyed and replaced, finals appended with their times, speaker and measured lag; reconnects on loss.

import { openSocket, websocketCredential } from "./api.js";
import { shortClock } from "./format.js";

const FRAME_MS = 100;
const MAX_RECONNECTS = 5;
const PENDING_LIMIT = 300; // frames (30 s) kept for a reconnect: unconfirmed audio plus audio captured meanwhile

function newTaskId() {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

function base64(buffer) {
  let binary = "";
  for (const byte of new Uint8Array(buffer)) binary += String.fromCharCode(byte);
  return btoa(binary);
}

function command(action, taskId, payload) {
  return JSON.stringify({ header: { action, task_id: taskId, streaming: "duplex" }, payload });
}

export function setupLive(el) {
  const state = {
    phase: "idle", // idle | connecting | streaming | reconnecting | stopping
    socket: null,
    taskId: null,
    media: null,
    context: null,
    pending: [],
    frameTimes: [], // wall time (performance.now) each 100 ms frame of the current task was captured
    replay: [], // frames of the current task after the last final's end: resent if the connection is lost
    replayStart: 0, // index (in the current task) of replay[0]
    offsetMs: 0, // where the current task's audio starts in the recording (moves on at each reconnect)
    attempts: 0,
    startedAt: 0,
    lags: [],
    finished: null,
    options: null,
  };

  function setStatus(text) {
    el.status.textContent = text;
  }

  function alertBox(text, kind = "error") {
    el.alert.hidden = !text;
    el.alert.textContent = text || "";
    el.alert.classList.toggle("info", kind === "info");
  }

  function setButton() {
    const busy = state.phase !== "idle";
    el.toggle.textContent = busy ? "Stop recording" : "Start recording";
    el.toggle.classList.toggle("recording", busy);
    el.toggle.disabled = state.phase === "stopping";
    for (const control of [el.model, el.language, el.vocab, el.diarization]) control.disabled = busy;
  }

  function parameters() {
    // heartbeat: a quiet minute keeps the task open instead of failing it
    const params = { format: "pcm", sample_rate: 16000, heartbeat: true };
    if (state.options.language) params.language_hints = [state.options.language];
    if (state.options.vocabulary) params.vocabulary_id = state.options.vocabulary;
    if (state.options.diarization) params.diarization_enabled = true;
    return params;
  }

  // -- audio -------------------------------------------------------------------------------------
  async function startAudio() {
    state.media = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    let context;
    try {
      context = new AudioContext({ sampleRate: 16000 });
    } catch {
      context = new AudioContext(); // the worklet resamples
    }
    state.context = context;
    await context.audioWorklet.addModule("/console/pcm-worklet.js");
    const source = context.createMediaStreamSource(state.media);
    const node = new AudioWorkletNode(context, "pcm-frames", { numberOfInputs: 1, numberOfOutputs: 0 });
    node.port.onmessage = (event) => onFrame(event.data.pcm, event.data.rms);
    source.connect(node);
  }

  function stopAudio() {
    if (state.media) for (const track of state.media.getTracks()) track.stop();
    if (state.context) state.context.close();
    state.media = null;
    state.context = null;
    el.level.value = 0;
  }

  function onFrame(pcm, rms) {
    el.level.value = Math.min(1, Math.sqrt(rms) * 1.6);
    el.clock.textContent = shortClock(performance.now() - state.startedAt).replace(/\.\d$/, "");
    if (state.phase === "streaming" && state.socket && state.socket.readyState === WebSocket.OPEN) {
      sendFrame(pcm, performance.now());
    } else if (state.phase === "connecting" || state.phase === "reconnecting") {
      state.pending.push([pcm, performance.now()]);
      if (state.pending.length > PENDING_LIMIT) state.pending.shift();
    }
  }

  function sendFrame(pcm, capturedAt) {
    if (state.options.session) {
      state.socket.send(JSON.stringify({ type: "input_audio_buffer.append", audio: base64(pcm) }));
    } else {
      state.socket.send(pcm);
    }
    state.frameTimes.push(capturedAt);
    state.replay.push([pcm, capturedAt]);
  }

  function confirm(endMs) {
    // A final comes after the end-of-sentence silence, so 400 ms after its end is still silence: the replay
    // starts there rather than at a word boundary the timestamps may place a little early.
    const upTo = Math.floor((endMs + 400) / FRAME_MS);
    while (state.replayStart < upTo && state.replay.length) {
      state.replay.shift();
      state.replayStart += 1;
    }
  }

  // -- the task ----------------------------------------------------------------------------------
  function sessionUpdate() {
    const transcription = state.options.language ? { language: state.options.language } : {};
    return JSON.stringify({
      type: "session.update",
      session: {
        modalities: ["text"],
        input_audio_format: "pcm",
        sample_rate: 16000,
        input_audio_transcription: transcription,
        turn_detection: { type: "server_vad", silence_duration_ms: 800 },
      },
    });
  }

  async function connect() {
    const credential = await websocketCredential();
    const session = state.options.session;
    const path = session
      ? `/api-ws/v1/realtime?model=${encodeURIComponent(state.options.model)}`
      : "/api-ws/v1/inference";
    const socket = openSocket(path, credential);
    const taskId = newTaskId();
    state.socket = socket;
    state.taskId = taskId;
    state.frameTimes = [];
    state.replay = [];
    state.replayStart = 0;
    let started = false;
    let opened = false;
    const utterances = {}; // session protocol: item_id → {begin, end} from the VAD events

    function onStarted() {
      started = true;
      state.attempts = 0;
      const wasReconnect = state.phase === "reconnecting";
      state.phase = "streaming";
      setStatus(`Recording with ${state.options.model}…`);
      if (wasReconnect) alertBox("Reconnected; captions continue.", "info");
      for (const [pcm, at] of state.pending.splice(0)) sendFrame(pcm, at);
    }

    function onSessionEvent(message, resolve) {
      const item = message.item_id ? (utterances[message.item_id] ||= {}) : {};
      switch (message.type) {
        case "session.created":
          socket.send(sessionUpdate());
          break;
        case "session.updated":
          if (!started) onStarted();
          break;
        case "input_audio_buffer.speech_started":
          item.begin = message.audio_start_ms;
          break;
        case "input_audio_buffer.speech_stopped":
          item.end = message.audio_end_ms;
          break;
        case "conversation.item.input_audio_transcription.text":
          onSentence({ text: `${message.text || ""}${message.stash || ""}`, end_time: null });
          break;
        case "conversation.item.input_audio_transcription.completed": {
          const end = item.end ?? state.frameTimes.length * FRAME_MS;
          onSentence({ begin_time: item.begin ?? 0, end_time: end, text: message.transcript || "" });
          break;
        }
        case "session.finished":
          resolve("finished");
          break;
        case "error":
          onFailed(message.error.code, message.error.message);
          resolve("failed");
          break;
        default:
      }
    }

    state.finished = new Promise((resolve) => {
      socket.onopen = () => {
        opened = true;
        if (session) return; // the server speaks first (session.created)
        socket.send(
          command("run-task", taskId, {
            task_group: "audio",
            task: "asr",
            function: "recognition",
            model: state.options.model,
            parameters: parameters(),
            input: {},
          }),
        );
      };
      socket.onmessage = (event) => {
        if (typeof event.data !== "string") return;
        const message = JSON.parse(event.data);
        if (session) {
          onSessionEvent(message, resolve);
          return;
        }
        const header = message.header || {};
        if (header.event === "task-started") {
          onStarted();
        } else if (header.event === "result-generated") {
          onSentence(message.payload.output.sentence);
        } else if (header.event === "task-finished") {
          resolve("finished");
        } else if (header.event === "task-failed") {
          onFailed(header.error_code, header.error_message);
          resolve("failed");
        }
      };
      socket.onclose = (event) => {
        resolve("closed");
        if (state.socket !== socket) return;
        if (!opened && state.phase === "connecting") {
          // refused at the handshake on the first try: a wrong key (or no server); retrying will not help
          alertBox("The server refused the live connection: check the API key (API key button) and try again.");
          finish(false);
        } else if (state.phase === "streaming" || state.phase === "connecting" || state.phase === "reconnecting") {
          reconnect(started ? `Connection lost (code ${event.code}).` : "The connection was refused.");
        }
      };
    });
  }

  function onFailed(code, message) {
    const throttled = String(code || "").startsWith("Throttling");
    const text = throttled
      ? `The server is at capacity (${code}): ${message}`
      : `Recognition failed (${code}): ${message}`;
    state.socket = null;
    if (throttled || code === "CLIENT_ERROR") reconnect(text);
    else {
      alertBox(text);
      finish(false);
    }
  }

  function reconnect(why) {
    if (state.phase === "idle" || state.phase === "stopping") return;
    const reason = /[.!?)]$/.test(why) ? why : `${why}.`;
    // The new task starts where the last final ended: audio after it is sent again.
    state.offsetMs += state.replayStart * FRAME_MS;
    state.pending = [...state.replay, ...state.pending].slice(-PENDING_LIMIT);
    state.replay = [];
    state.replayStart = 0;
    state.frameTimes = [];
    state.socket = null;
    el.interim.textContent = "";
    if (state.attempts >= MAX_RECONNECTS) {
      alertBox(`${reason} Gave up after ${MAX_RECONNECTS} attempts; press Start recording to try again.`);
      finish(false);
      return;
    }
    state.attempts += 1;
    const delay = Math.min(8, 2 ** (state.attempts - 1));
    state.phase = "reconnecting";
    alertBox(`${reason} Reconnecting in ${delay} s (attempt ${state.attempts} of ${MAX_RECONNECTS})…`);
    setStatus("Reconnecting…");
    setTimeout(() => {
      if (state.phase === "reconnecting") connect().catch((error) => reconnect(String(error.message || error)));
    }, delay * 1000);
  }

  function lagFor(endMs) {
    const index = Math.min(state.frameTimes.length - 1, Math.max(0, Math.ceil(endMs / FRAME_MS) - 1));
    if (index < 0 || state.frameTimes[index] === undefined) return null;
    return (performance.now() - state.frameTimes[index]) / 1000;
  }

  function onSentence(sentence) {
    if (!sentence || sentence.heartbeat) return;
    if (sentence.end_time === null || sentence.end_time === undefined) {
      el.interim.textContent = sentence.text || "";
      return;
    }
    el.interim.textContent = "";
    const lag = lagFor(sentence.end_time);
    confirm(sentence.end_time);
    if (!sentence.text) return;
    const item = document.createElement("li");
    const time = document.createElement("span");
    time.className = "time";
    time.textContent = `${shortClock(state.offsetMs + sentence.begin_time)}–${shortClock(state.offsetMs + sentence.end_time)}`;
    item.append(time);
    if (sentence.speaker_id !== undefined && sentence.speaker_id !== null) {
      item.classList.add(`speaker-${sentence.speaker_id % 6}`);
      const speaker = document.createElement("span");
      speaker.className = "speaker";
      speaker.textContent = `Speaker ${sentence.speaker_id + 1}`;
      item.append(speaker);
    }
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = sentence.text;
    item.append(text);
    if (lag !== null) {
      state.lags.push(lag);
      const badge = document.createElement("span");
      badge.className = "lag";
      badge.title = "Time from the end of the sentence's audio to its final result";
      badge.textContent = `lag ${lag.toFixed(2)} s`;
      item.append(badge);
    }
    el.finals.append(item);
    item.scrollIntoView({ block: "nearest" });
  }

  // -- start / stop ------------------------------------------------------------------------------
  async function start() {
    state.options = {
      model: el.model.value,
      session: el.model.selectedOptions[0]?.dataset.protocol === "session",
      language: el.language.value,
      vocabulary: el.vocab.value,
      diarization: el.diarization.checked,
    };
    Object.assign(state, { phase: "connecting", pending: [], offsetMs: 0, attempts: 0, lags: [] });
    el.finals.replaceChildren();
    el.interim.textContent = "";
    alertBox("");
    setButton();
    setStatus("Opening the microphone…");
    try {
      await startAudio();
    } catch (error) {
      alertBox(`No microphone: ${error.message || error.name}. Allow microphone access or plug one in.`);
      finish(false);
      return;
    }
    state.startedAt = performance.now();
    setStatus("Connecting…");
    try {
      await connect();
    } catch (error) {
      if (error.status === 401) {
        alertBox(`The server refused the API key (${error.message}). Enter a valid key and start again.`);
        finish(false);
      } else reconnect(`Cannot connect: ${error.message || error}.`);
    }
  }

  async function stop() {
    const socket = state.socket;
    const wasStreaming = state.phase === "streaming";
    state.phase = "stopping";
    setButton();
    stopAudio();
    setStatus("Finishing the last sentence…");
    if (wasStreaming && socket && socket.readyState === WebSocket.OPEN) {
      if (state.options.session) socket.send(JSON.stringify({ type: "session.finish" }));
      else socket.send(command("finish-task", state.taskId, { input: {} }));
      await Promise.race([state.finished, new Promise((r) => setTimeout(r, 20000))]);
    }
    finish(true);
  }

  function finish(normal) {
    stopAudio();
    if (state.socket && state.socket.readyState <= WebSocket.OPEN) state.socket.close(1000);
    state.socket = null;
    state.phase = "idle";
    el.interim.textContent = "";
    setButton();
    const count = el.finals.children.length;
    const lags = [...state.lags].sort((a, b) => a - b);
    const median = lags.length ? ` Median final lag ${lags[Math.floor(lags.length / 2)].toFixed(2)} s.` : "";
    setStatus(normal ? `Stopped. ${count} sentence${count === 1 ? "" : "s"}.${median}` : "Stopped.");
  }

  el.form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (state.phase === "idle") start();
    else if (state.phase !== "stopping") stop();
  });
  setButton();
}
