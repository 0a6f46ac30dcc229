// The REST gateway, as the dashboard calls it: JSON over fetch with the session's API key, and
// server-sent events read from a fetch body (EventSource cannot send the X-API-Key header).

const KEY_ITEM = "gyoza.apiKey";

// The API key lives in sessionStorage: this browser tab's session only, never on disk for
// longer, never in a cookie (so no other site's form can use it).
export const session = {
  get key() {
    return sessionStorage.getItem(KEY_ITEM) || "";
  },
  set key(value) {
    if (value) sessionStorage.setItem(KEY_ITEM, value);
    else sessionStorage.removeItem(KEY_ITEM);
  },
};

export class ApiError extends Error {
  constructor(status, body) {
    super(typeof body?.detail === "string" ? body.detail : `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

function headers(accept, extra = {}) {
  const out = { Accept: accept, ...extra };
  if (session.key) out["X-API-Key"] = session.key;
  return out;
}

async function failure(resp) {
  const text = await resp.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = { detail: text || resp.statusText };
  }
  return new ApiError(resp.status, body);
}

export async function api(method, path, body) {
  const init = { method, headers: headers("application/json"), cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  if (!resp.ok) throw await failure(resp);
  return resp.json();
}

export const get = (path) => api("GET", path);
export const post = (path, body = {}) => api("POST", path, body);

// Reads the event stream at `path`, calling onFrame({event, id, data}) for each frame that
// has data (comments, the heartbeats, are skipped), and onOpen() once the answer's headers
// came. Resolves when the server closes the stream, rejects with ApiError for an error
// answer, or when `signal` aborts.
export async function stream(path, onFrame, { signal, onOpen } = {}) {
  const resp = await fetch(path, { headers: headers("text/event-stream"), cache: "no-store", signal });
  if (!resp.ok) throw await failure(resp);
  if (onOpen) onOpen();
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const frame = { event: "message", id: null, data: null };
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") frame.data = frame.data === null ? text : `${frame.data}\n${text}`;
        else if (field === "event") frame.event = text;
        else if (field === "id") frame.id = text;
      }
      if (frame.data !== null) onFrame(frame);
    }
  }
}

// Follows a stream for as long as the page lives: reconnects after a drop, waiting longer
// each time (up to 10 s). `open()` gives the path (it may change, e.g. the cursor to resume
// after); `onStatus` hears "connecting", "live", "reconnecting" and "ended"; `onFrame` each
// frame, and returns "end" when the stream ended for good. A refusal (4xx) stops it and goes
// to `onError`.
export function follow({ open, onFrame, onStatus, onError }) {
  let delay = 500;
  let stopped = false;
  const controller = new AbortController();
  (async () => {
    while (!stopped) {
      onStatus("connecting");
      let ended = false;
      try {
        await stream(
          open(),
          (frame) => {
            delay = 500;
            if (frame.event === "error") {
              const body = JSON.parse(frame.data);
              if (body.status < 500) throw new ApiError(body.status, body);
              return;
            }
            if (onFrame(frame) === "end") ended = true;
          },
          { signal: controller.signal, onOpen: () => onStatus("live") },
        );
      } catch (err) {
        if (stopped) return;
        if (err instanceof ApiError && err.status < 500) {
          onStatus("ended");
          onError(err);
          return;
        }
      }
      if (ended) {
        onStatus("ended");
        return;
      }
      onStatus("reconnecting");
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 10000);
    }
  })();
  return () => {
    stopped = true;
    controller.abort();
  };
}
