// The HTTP API as the dashboard uses it: JSON requests with the admin token, the API's error
// answers as ApiError ({code, message, details}), and Server-Sent Events read with fetch and a
// ReadableStream (EventSource can neither POST nor send the Authorization header).

const TOKEN_KEY = "switchyard.adminToken";

/** The admin token, kept in sessionStorage only (gone when the tab closes). */
export const auth = {
  get token() { return sessionStorage.getItem(TOKEN_KEY) || ""; },
  set(token) {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  },
};

/** An error answer of the API, or a network failure (status 0). */
export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.code = (body && body.code) || (status ? `http_${status}` : "network_error");
    this.details = (body && body.details) || null;
  }
}

let unauthorized = () => {};
/** Called whenever an answer is 401 (the page shows its login). */
export function onUnauthorized(handler) { unauthorized = handler; }

function headers(json) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  if (auth.token) h.Authorization = `Bearer ${auth.token}`;
  return h;
}

async function failure(res) {
  const text = await res.text().catch(() => "");
  let body = null;
  try { body = JSON.parse(text); } catch { body = { message: text || res.statusText }; }
  if (res.status === 401) unauthorized();
  return new ApiError(res.status, body);
}

async function send(method, path, body, accept) {
  let res;
  try {
    res = await fetch(path, {
      method,
      headers: { ...headers(body !== undefined), ...(accept ? { Accept: accept } : {}) },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
  } catch (e) {
    throw new ApiError(0, { message: `The gateway cannot be reached (${e.message}).` });
  }
  if (!res.ok) throw await failure(res);
  return res;
}

async function json(method, path, body) {
  const res = await send(method, path, body);
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

export const api = {
  get: (path) => json("GET", path),
  post: (path, body) => json("POST", path, body === undefined ? {} : body),
  put: (path, body) => json("PUT", path, body),
  del: (path) => json("DELETE", path),
  /** A text answer (the Prometheus scrape). */
  text: async (path) => (await send("GET", path, undefined, "text/plain")).text(),
};

/**
 * Splits Server-Sent Events text into complete events and the unfinished rest.
 * Each event is {event, data, id}; `data` is parsed as JSON when it is JSON. Comments
 * (keep-alives) and `retry:` lines are skipped.
 */
export function parseSse(buffer) {
  const events = [];
  const blocks = buffer.replace(/\r\n?/g, "\n").split("\n\n");
  const rest = blocks.pop();
  for (const block of blocks) {
    let event = "message", id = null;
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
      else if (field === "id") id = value;
    }
    if (!data.length) continue;
    const text = data.join("\n");
    let parsed = text;
    try { parsed = JSON.parse(text); } catch { /* plain text */ }
    events.push({ event, data: parsed, id });
  }
  return { events, rest };
}

/**
 * Sends a request and reads its answer as Server-Sent Events, calling onEvent for each one.
 * Resolves with null when the stream ends, or with the JSON body when the answer was plain
 * JSON instead. Rejects with ApiError for an error answer.
 */
export async function stream(method, path, body, onEvent, signal, onOpen = () => {}) {
  let res;
  try {
    res = await fetch(path, {
      method,
      headers: { ...headers(body !== undefined), Accept: "text/event-stream" },
      body: body !== undefined ? JSON.stringify(body) : undefined,
      signal,
    });
  } catch (e) {
    if (e.name === "AbortError") return null;
    throw new ApiError(0, { message: `The gateway cannot be reached (${e.message}).` });
  }
  if (!res.ok) throw await failure(res);
  if (!(res.headers.get("content-type") || "").startsWith("text/event-stream")) return res.json();
  onOpen();
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const { events, rest } = parseSse(buffer + value);
      buffer = rest;
      for (const event of events) onEvent(event);
    }
  } catch (e) {
    if (e.name !== "AbortError") throw e;
  }
  return null;
}

/**
 * The broker's events matching `pattern` (`GET /api/events?pattern=…`), reconnecting after a
 * drop. onStatus gets "connecting", "live" or "down". Returns {close()}.
 */
export function subscribe(pattern, onEvent, onStatus = () => {}) {
  let closed = false, controller = null, timer = null;
  const path = `/api/events?pattern=${encodeURIComponent(pattern || "*")}`;
  async function run() {
    if (closed) return;
    controller = new AbortController();
    onStatus("connecting");
    try {
      await stream("GET", path, undefined, onEvent, controller.signal, () => onStatus("live"));
      // The server ends a stream only at shutdown or when this client fell behind: reconnect.
    } catch (e) {
      onStatus("down", e);
      // A refused pattern or a missing token will not get better by retrying.
      if (e.status === 400 || e.status === 401) return;
    }
    if (!closed) { onStatus("down"); timer = setTimeout(run, 2000); }
  }
  run();
  return {
    close() { closed = true; clearTimeout(timer); if (controller) controller.abort(); },
  };
}
