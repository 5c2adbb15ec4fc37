// The hub's HTTP API (/api/v1), the same one the SDK and the CLI use. No second back end.
const API = "/api/v1";
const TOKEN_KEY = "fedpact.token";
const USER_KEY = "fedpact.user";

export class ApiError extends Error {
  constructor(status, detail) {
    super(formatDetail(detail));
    this.status = status;
    this.detail = detail;
  }
}

// The hub phrases hints for API callers ("list tasks with GET /api/v1/tasks"); on a web page
// they point at the page's own links instead.
const WEB_HINTS = [
  [/list tasks with GET \/api\/v1\/tasks\b/g, "see the Tasks page"],
  [/join it first with POST \/api\/v1\/tasks\/([^/\s]+)\/join/g, "join it first on the task's page"],
  [/list yours with GET \/api\/v1\/models/g, "see your models on the task's page"],
  [/stop it first with DELETE \/api\/v1\/tasks\/([^/\s]+)\/aggregator/g, "stop it first with the Stop button"],
];

export function forBrowser(text) {
  return WEB_HINTS.reduce((t, [pattern, words]) => t.replace(pattern, words), text);
}

export function formatDetail(detail) {
  return forBrowser(rawDetail(detail));
}

function rawDetail(detail) {
  if (Array.isArray(detail)) {
    return detail
      .map((d) => {
        const loc = (d.loc || []).filter((p) => p !== "body").join(".");
        return loc ? `${loc}: ${d.msg}` : d.msg;
      })
      .join("; ");
  }
  return typeof detail === "string" ? detail : JSON.stringify(detail);
}

export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  get user() {
    try {
      return JSON.parse(sessionStorage.getItem(USER_KEY) || "null");
    } catch {
      return null;
    }
  },
  save(token, user) {
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.setItem(USER_KEY, JSON.stringify(user));
  },
  clear() {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(USER_KEY);
  },
};

let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

export async function request(method, path, { body, params, raw, headers } = {}) {
  let url = API + path;
  if (params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) {
      if (v !== undefined && v !== null && v !== "" && v !== false) q.set(k, v === true ? "true" : String(v));
    }
    const s = q.toString();
    if (s) url += "?" + s;
  }
  const h = { ...(headers || {}) };
  if (session.token) h.Authorization = `Bearer ${session.token}`;
  let payload;
  if (body instanceof Blob || body instanceof ArrayBuffer) {
    payload = body;
    h["Content-Type"] = "application/octet-stream";
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    h["Content-Type"] = "application/json";
  }
  const resp = await fetch(url, { method, headers: h, body: payload });
  if (!resp.ok) {
    let detail = resp.statusText || `HTTP ${resp.status}`;
    try {
      const j = await resp.json();
      if (j && j.detail !== undefined) detail = j.detail;
    } catch {
      /* not JSON */
    }
    if (resp.status === 401 && session.token && !path.startsWith("/auth/login")) onUnauthorized(detail);
    throw new ApiError(resp.status, detail);
  }
  if (raw) return resp;
  if (resp.status === 204) return null;
  const text = await resp.text();
  return text ? JSON.parse(text) : null;
}

export const api = {
  register: (name, password, organisation) => request("POST", "/users", { body: { name, password, organisation } }),
  login: (name, password) => request("POST", "/auth/login", { body: { name, password } }),
  logout: () => request("POST", "/auth/logout"),
  me: () => request("GET", "/users/me"),
  algorithms: () => request("GET", "/algorithms"),
  tasks: (params) => request("GET", "/tasks", { params }),
  task: (t) => request("GET", `/tasks/${encodeURIComponent(t)}`),
  createTask: (name, description, definition) => request("POST", "/tasks", { body: { name, description, definition } }),
  join: (t) => request("POST", `/tasks/${encodeURIComponent(t)}/join`),
  joinRequests: (t) => request("GET", `/tasks/${encodeURIComponent(t)}/requests`),
  approve: (t, user) => request("POST", `/tasks/${encodeURIComponent(t)}/requests/${encodeURIComponent(user)}/approve`),
  decline: (t, user) => request("POST", `/tasks/${encodeURIComponent(t)}/requests/${encodeURIComponent(user)}/decline`),
  removeMember: (t, user) => request("DELETE", `/tasks/${encodeURIComponent(t)}/members/${encodeURIComponent(user)}`),
  cancel: (t) => request("POST", `/tasks/${encodeURIComponent(t)}/cancel`),
  remove: (t) => request("DELETE", `/tasks/${encodeURIComponent(t)}`),
  rounds: (t) => request("GET", `/tasks/${encodeURIComponent(t)}/rounds`),
  hosted: (t) => request("GET", `/tasks/${encodeURIComponent(t)}/aggregator`),
  startHosted: (t, body) => request("POST", `/tasks/${encodeURIComponent(t)}/aggregator`, { body }),
  stopHosted: (t) => request("DELETE", `/tasks/${encodeURIComponent(t)}/aggregator`),
  hostedLog: (t, offset) => request("GET", `/tasks/${encodeURIComponent(t)}/aggregator/log`, { params: { offset } }),
  models: (task) => request("GET", "/models", { params: { task } }),
  model: (id) => request("GET", `/models/${id}`),
  modelCard: (id) => request("GET", `/models/${id}/card`),
  downloadModel: (id) => request("GET", `/models/${id}/download`, { raw: true }),

  async uploadBlob(task, file, onProgress, isPrivate = false) {
    // Content-addressed, chunked upload, exactly as the SDK does it. ``isPrivate`` keeps a
    // creator's blob (evaluation data) from the participants.
    const buf = await file.arrayBuffer();
    const digest = await crypto.subtle.digest("SHA-256", buf);
    const sha256 = Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
    const t = encodeURIComponent(task);
    const start = await request("POST", `/tasks/${t}/uploads`, { body: { sha256, size: buf.byteLength, private: isPrivate } });
    if (!start.complete) {
      const CHUNK = 8 * 1024 * 1024;
      let offset = start.offset;
      while (offset < buf.byteLength) {
        const chunk = buf.slice(offset, Math.min(offset + CHUNK, buf.byteLength));
        const out = await request("PUT", `/tasks/${t}/uploads/${start.upload_id}`, { params: { offset }, body: chunk });
        offset = out.offset;
        if (onProgress) onProgress(offset, buf.byteLength);
      }
      await request("POST", `/tasks/${t}/uploads/${start.upload_id}/complete`);
    }
    return { sha256, size: buf.byteLength };
  },
};
