// The console's shell: tabs, the API key dialog, model and language lists, shared vocabulary pickers.

import { getJson, getKey, onKeyNeeded, setKey } from "./api.js";
import { setupFiles } from "./files.js";
import { setupLive } from "./live.js";
import { setupVocab } from "./vocab.js";

const $ = (id) => document.getElementById(id);

const LANGUAGES = [
  ["", "Detect"],
  ["en", "English"],
  ["zh", "Chinese"],
  ["yue", "Cantonese"],
  ["ja", "Japanese"],
  ["ko", "Korean"],
  ["de", "German"],
  ["fr", "French"],
  ["es", "Spanish"],
  ["it", "Italian"],
  ["pt", "Portuguese"],
  ["ru", "Russian"],
];

function fill(select, entries, selected) {
  select.replaceChildren(
    ...entries.map(([value, label]) => {
      const option = new Option(label, value);
      option.selected = value === selected;
      return option;
    }),
  );
}

// -- tabs --------------------------------------------------------------------------------------------
function setupTabs() {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  function select(tab, focus = false) {
    for (const other of tabs) {
      const on = other === tab;
      other.setAttribute("aria-selected", String(on));
      other.tabIndex = on ? 0 : -1;
      $(other.getAttribute("aria-controls")).hidden = !on;
    }
    if (focus) tab.focus();
    history.replaceState(null, "", `#${tab.id.replace("tab-", "")}`);
  }
  for (const [index, tab] of tabs.entries()) {
    tab.addEventListener("click", () => select(tab));
    tab.addEventListener("keydown", (event) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (step) select(tabs[(index + step + tabs.length) % tabs.length], true);
      if (event.key === "Home") select(tabs[0], true);
      if (event.key === "End") select(tabs[tabs.length - 1], true);
    });
  }
  const initial = tabs.find((tab) => `#${tab.id.replace("tab-", "")}` === location.hash);
  if (initial) select(initial);
}

// -- API key -----------------------------------------------------------------------------------------
function setupKey() {
  const dialog = $("key-dialog");
  const input = $("key-input");
  const button = $("key-button");
  const label = () => (button.textContent = getKey() ? "API key ✓" : "API key");
  function ask() {
    input.value = getKey();
    dialog.showModal();
    return new Promise((resolve) => {
      dialog.addEventListener(
        "close",
        () => {
          if (dialog.returnValue === "save") setKey(input.value.trim());
          label();
          resolve(dialog.returnValue === "save" && Boolean(input.value.trim()));
        },
        { once: true },
      );
    });
  }
  button.addEventListener("click", ask);
  onKeyNeeded(ask);
  label();
}

// -- start -------------------------------------------------------------------------------------------
async function main() {
  setupTabs();
  setupKey();
  for (const select of document.querySelectorAll("select.language")) fill(select, LANGUAGES, "");

  let models = { realtime: ["fun-asr-realtime"], session: [], file: ["fun-asr"] };
  try {
    models = await getJson("/console/api/models");
  } catch {
    /* keep the defaults */
  }
  const pairs = (names) => names.map((n) => [n, n]);
  fill($("live-model"), pairs(models.realtime), "fun-asr-realtime");
  if (models.session && models.session.length) {
    // Qwen-ASR models speak the session protocol (/api-ws/v1/realtime)
    const runTask = document.createElement("optgroup");
    runTask.label = "run-task protocol";
    runTask.append(...$("live-model").querySelectorAll("option"));
    const session = document.createElement("optgroup");
    session.label = "session protocol";
    for (const name of models.session) {
      const option = new Option(name, name);
      option.dataset.protocol = "session";
      session.append(option);
    }
    $("live-model").append(runTask, session);
    $("live-model").value = "fun-asr-realtime";
  }
  fill($("file-model"), pairs(models.file), "fun-asr");
  fill($("vocab-model"), pairs([...models.file, ...models.realtime]), "fun-asr");

  const vocabSelects = [...document.querySelectorAll("select.vocab-select")];
  function updateVocabSelects(list) {
    for (const select of vocabSelects) {
      const keep = select.value;
      const entries = [["", "None"], ...list.map((v) => [v.vocabulary_id, `${v.vocabulary_id} (${v.target_model})`])];
      fill(select, entries, list.some((v) => v.vocabulary_id === keep) ? keep : "");
    }
  }
  updateVocabSelects([]);

  setupLive({
    form: $("live-form"),
    toggle: $("live-toggle"),
    model: $("live-model"),
    language: $("live-language"),
    vocab: $("live-vocab"),
    diarization: $("live-diarization"),
    level: $("live-level"),
    clock: $("live-clock"),
    status: $("live-status"),
    alert: $("live-alert"),
    finals: $("live-finals"),
    interim: $("live-interim"),
  });
  setupFiles({
    model: $("file-model"),
    language: $("file-language"),
    vocab: $("file-vocab"),
    diarization: $("file-diarization"),
    dropzone: $("dropzone"),
    input: $("file-input"),
    urlForm: $("url-form"),
    url: $("file-url"),
    uploadProgress: $("upload-progress"),
    jobProgress: $("job-progress"),
    status: $("file-status"),
    alert: $("file-alert"),
    viewer: $("viewer"),
    player: $("player"),
    search: $("search"),
    searchCount: $("search-count"),
    downloads: [...document.querySelectorAll(".downloads button")],
    transcript: $("transcript"),
  });
  const vocab = setupVocab(
    {
      form: $("vocab-form"),
      id: $("vocab-id"),
      prefix: $("vocab-prefix"),
      model: $("vocab-model"),
      terms: $("vocab-terms"),
      title: $("vocab-form-title"),
      save: $("vocab-save"),
      cancel: $("vocab-cancel"),
      status: $("vocab-status"),
      alert: $("vocab-alert"),
      rows: document.querySelector("#vocab-table tbody"),
      empty: $("vocab-empty"),
    },
    {
      onChange: updateVocabSelects,
      onUse: (id) => {
        for (const select of vocabSelects) select.value = id;
        $("vocab-status").textContent = `${id} is now used for live sessions and file jobs.`;
      },
    },
  );
  try {
    await vocab.refresh();
  } catch (error) {
    $("vocab-alert").hidden = false;
    $("vocab-alert").textContent = `Cannot list vocabularies: ${error.message}`;
  }
  document.body.dataset.ready = "true";
}

main();
