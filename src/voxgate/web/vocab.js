// Vocabularies view: list, create, edit and delete hotword lists; "Use" picks one for live sessions and jobs.

import { vocabulary } from "./api.js";

/** "term, weight, lang" per line → [{text, weight, lang?}] (weight 1-5, default 4). */
export function parseTerms(text) {
  const items = [];
  for (const [index, raw] of text.split("\n").entries()) {
    const line = raw.trim();
    if (!line) continue;
    const [term, weight, lang] = line.split(/\s*[,\t]\s*/);
    const value = weight ? Number(weight) : 4;
    if (!Number.isInteger(value) || value < 1 || value > 5) {
      throw new Error(`line ${index + 1}: the weight must be a whole number from 1 to 5`);
    }
    const item = { text: term, weight: value };
    if (lang) item.lang = lang;
    items.push(item);
  }
  if (!items.length) throw new Error("add at least one term");
  return items;
}

function formatTerms(items) {
  return items.map((i) => [i.text, i.weight, i.lang].filter((v) => v !== undefined).join(", ")).join("\n");
}

export function setupVocab(el, { onChange, onUse }) {
  const status = (text) => (el.status.textContent = text);
  function alertBox(text) {
    el.alert.hidden = !text;
    el.alert.textContent = text || "";
  }
  let known = [];

  function resetForm() {
    el.id.value = "";
    el.terms.value = "";
    el.prefix.disabled = false;
    el.model.disabled = false;
    el.title.textContent = "New vocabulary";
    el.save.textContent = "Create";
    el.cancel.hidden = true;
  }

  async function refresh() {
    const listed = (await vocabulary({ action: "list_vocabulary", page_index: 0, page_size: 100 })).vocabulary_list || [];
    known = await Promise.all(
      listed.map(async (entry) => ({
        ...entry,
        ...(await vocabulary({ action: "query_vocabulary", vocabulary_id: entry.vocabulary_id })),
      })),
    );
    el.rows.replaceChildren();
    for (const entry of known) {
      const row = document.createElement("tr");
      const cells = [
        [entry.vocabulary_id, "id", "Id"],
        [entry.target_model, "model", "Model"],
        [(entry.vocabulary || []).map((v) => v.text).join(", "), "", "Terms"],
        [entry.gmt_modified || entry.gmt_create || "", "", "Changed"],
      ];
      for (const [text, cls, label] of cells) {
        const cell = document.createElement("td");
        cell.textContent = text;
        cell.dataset.label = label; // shown before the value when rows stack on a phone
        if (cls) cell.className = cls;
        row.append(cell);
      }
      const actions = document.createElement("td");
      actions.className = "actions";
      for (const [label, handler, cls] of [
        ["Use", () => onUse(entry.vocabulary_id), ""],
        ["Edit", () => edit(entry), ""],
        ["Delete", () => remove(entry), "danger"],
      ]) {
        const button = document.createElement("button");
        button.type = "button";
        button.textContent = label;
        button.className = cls;
        button.setAttribute("aria-label", `${label} ${entry.vocabulary_id}`);
        button.addEventListener("click", handler);
        actions.append(button);
      }
      row.append(actions);
      el.rows.append(row);
    }
    el.empty.hidden = known.length > 0;
    onChange(known);
  }

  function edit(entry) {
    el.id.value = entry.vocabulary_id;
    el.prefix.disabled = true;
    el.model.value = entry.target_model;
    el.model.disabled = true;
    el.terms.value = formatTerms(entry.vocabulary || []);
    el.title.textContent = `Edit ${entry.vocabulary_id}`;
    el.save.textContent = "Save changes";
    el.cancel.hidden = false;
    el.terms.focus();
  }

  async function remove(entry) {
    if (!confirm(`Delete ${entry.vocabulary_id}?`)) return;
    try {
      await vocabulary({ action: "delete_vocabulary", vocabulary_id: entry.vocabulary_id });
      status(`Deleted ${entry.vocabulary_id}.`);
      if (el.id.value === entry.vocabulary_id) resetForm();
      await refresh();
    } catch (error) {
      alertBox(error.message);
    }
  }

  el.form.addEventListener("submit", async (event) => {
    event.preventDefault();
    alertBox("");
    try {
      const items = parseTerms(el.terms.value);
      if (el.id.value) {
        await vocabulary({ action: "update_vocabulary", vocabulary_id: el.id.value, vocabulary: items });
        status(`Saved ${el.id.value}.`);
      } else {
        const created = await vocabulary({
          action: "create_vocabulary",
          target_model: el.model.value,
          prefix: el.prefix.value,
          vocabulary: items,
        });
        status(`Created ${created.vocabulary_id}.`);
      }
      resetForm();
      await refresh();
    } catch (error) {
      alertBox(error.message);
    }
  });
  el.cancel.addEventListener("click", resetForm);
  return { refresh };
}
