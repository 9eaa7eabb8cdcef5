// Talking to the voxgate server: the API key (kept in sessionStorage), JSON calls with the DashScope
// error envelope, temporary tokens for WebSockets, and the subprotocols that carry a key from a browser.

const KEY_STORAGE = "voxgate.apiKey";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code || `HTTP${status}`;
  }
}

export function getKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
}

let askForKey = async () => false;

/** Install the function that asks the user for a key (returns true when one was entered). */
export function onKeyNeeded(fn) {
  askForKey = fn;
}

function authHeaders() {
  const key = getKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function errorOf(response) {
  let body = {};
  try {
    body = await response.json();
  } catch {
    /* not JSON */
  }
  return new ApiError(response.status, body.code, body.message || body.msg || response.statusText);
}

/** fetch() with the key; a 401 asks for a key once and retries. */
export async function request(path, options = {}, retried = false) {
  const headers = { ...(options.headers || {}), ...authHeaders() };
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401 && !retried && (await askForKey())) {
    return request(path, options, true);
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

export async function getJson(path) {
  return (await request(path)).json();
}

export async function postJson(path, body, extraHeaders = {}) {
  const response = await request(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...extraHeaders },
    body: JSON.stringify(body),
  });
  return response.json();
}

/** A credential for a WebSocket: a temporary token from POST /api/v1/tokens when the server has that
 *  endpoint, otherwise the key itself. A refused key (401, after asking for one) is thrown. */
export async function websocketCredential() {
  try {
    const response = await request("/api/v1/tokens?expire_in_seconds=60", { method: "POST" });
    const body = await response.json();
    return body.token || (body.output && body.output.token) || getKey();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) throw error;
    return getKey(); // no token endpoint on this server
  }
}

function hex(text) {
  return Array.from(new TextEncoder().encode(text), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Open a WebSocket on this server; the credential travels as the subprotocol voxgate.key.<hex>. */
export function openSocket(path, credential) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const protocols = ["voxgate"];
  if (credential) protocols.push(`voxgate.key.${hex(credential)}`);
  const socket = new WebSocket(`${scheme}//${location.host}${path}`, protocols);
  socket.binaryType = "arraybuffer";
  return socket;
}

/** The vocabulary API (POST /api/v1/services/audio/asr/customization). */
export async function vocabulary(input) {
  const body = await postJson("/api/v1/services/audio/asr/customization", { model: "speech-biasing", input });
  return body.output || {};
}

/** Upload a File through the DashScope upload flow; ``onProgress(fraction)``; resolves to its oss:// URL. */
export async function uploadFile(file, model, onProgress) {
  const policy = (await getJson(`/api/v1/uploads?action=getPolicy&model=${encodeURIComponent(model)}`)).data;
  const safeName = file.name.replace(/[^\w.\-]+/g, "_").slice(-120) || "audio";
  const key = `${policy.upload_dir}/${safeName}`;
  const form = new FormData();
  form.append("OSSAccessKeyId", policy.oss_access_key_id);
  form.append("Signature", policy.signature);
  form.append("policy", policy.policy);
  form.append("key", key);
  form.append("x-oss-object-acl", policy.x_oss_object_acl);
  form.append("x-oss-forbid-overwrite", policy.x_oss_forbid_overwrite);
  form.append("success_action_status", "200");
  form.append("file", file, safeName);
  const target = new URL(policy.upload_host, location.href);
  const uploadUrl = target.origin === location.origin ? target.pathname : target.href;
  await new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", uploadUrl);
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    };
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) resolve();
      else {
        let message = xhr.statusText;
        try {
          message = JSON.parse(xhr.responseText).message || message;
        } catch {
          /* not JSON */
        }
        reject(new ApiError(xhr.status, "UploadFailed", message));
      }
    };
    xhr.onerror = () => reject(new ApiError(0, "UploadFailed", "the upload was interrupted"));
    xhr.send(form);
  });
  onProgress(1);
  return `oss://${key}`;
}

/** Same-origin path for a result URL this server handed out (its public URL may name another host). */
export function localResultPath(url) {
  const parsed = new URL(url, location.href);
  return parsed.pathname.startsWith("/api/v1/results/") ? parsed.pathname : parsed.href;
}
