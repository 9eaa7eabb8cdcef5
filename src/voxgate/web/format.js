// Renderings of a transcript (the DashScope result JSON: transcripts[].sentences[].words[]).

export function clock(ms, sep = ".", hours = true) {
  const total = Math.max(0, Math.round(ms));
  const h = Math.floor(total / 3600000);
  const m = Math.floor((total % 3600000) / 60000);
  const s = Math.floor((total % 60000) / 1000);
  const milli = total % 1000;
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  const head = hours || h ? `${pad(h)}:` : "";
  return `${head}${pad(m)}:${pad(s)}${sep}${pad(milli, 3)}`;
}

/** Short clock for the page: m:ss.s */
export function shortClock(ms) {
  const total = Math.max(0, ms) / 1000;
  const m = Math.floor(total / 60);
  return `${m}:${(total - m * 60).toFixed(1).padStart(4, "0")}`;
}

export function sentencesOf(result) {
  const out = [];
  for (const transcript of result.transcripts || []) {
    for (const sentence of transcript.sentences || []) {
      out.push({ ...sentence, channel_id: transcript.channel_id });
    }
  }
  return out.sort((a, b) => a.begin_time - b.begin_time);
}

function label(sentence) {
  return sentence.speaker_id !== undefined && sentence.speaker_id !== null ? `[speaker ${sentence.speaker_id}] ` : "";
}

export function toSrt(sentences) {
  return sentences
    .map((s, i) => `${i + 1}\n${clock(s.begin_time, ",")} --> ${clock(s.end_time, ",")}\n${label(s)}${s.text}\n`)
    .join("\n");
}

export function toVtt(sentences) {
  const cues = sentences.map((s) => `${clock(s.begin_time)} --> ${clock(s.end_time)}\n${label(s)}${s.text}\n`);
  return ["WEBVTT", "", ...cues].join("\n");
}

export function toText(sentences) {
  return sentences.map((s) => `${label(s)}${s.text}`).join("\n") + "\n";
}

export function render(result, format) {
  const sentences = sentencesOf(result);
  if (format === "srt") return { text: toSrt(sentences), type: "application/x-subrip" };
  if (format === "vtt") return { text: toVtt(sentences), type: "text/vtt" };
  if (format === "txt") return { text: toText(sentences), type: "text/plain" };
  return { text: JSON.stringify(result, null, 2) + "\n", type: "application/json" };
}

export function download(name, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type: `${type};charset=utf-8` }));
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
