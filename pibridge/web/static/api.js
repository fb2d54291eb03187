// The chat HTTP API (protocol.md section 2). The browser holds no key and no
// token: the server's HttpOnly cookie rides along with same-origin requests.

/** The server answered 401: the page was not opened through the printed URL. */
export class AuthRequired extends Error {
  constructor() {
    super("Not signed in: open the URL the server printed when it started (it carries a token).");
    this.name = "AuthRequired";
  }
}

/** The server could not be reached at all (stopped, restarting, network down). */
export class Unreachable extends Error {
  constructor(cause) {
    super("The pibridge server cannot be reached; retrying.");
    this.name = "Unreachable";
    this.cause = cause;
  }
}

/** The server refused a request; `code` and `status` say why. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

async function send(path, { method = "GET", body, headers = {}, signal } = {}) {
  const init = { method, credentials: "same-origin", headers: { ...headers }, signal };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new Unreachable(error);
  }
  if (response.status === 401) throw new AuthRequired();
  // A reverse proxy in front of pibridge answers these while pibridge is down.
  if (response.status === 502 || response.status === 504) throw new Unreachable(response.statusText);
  if (!response.ok) throw await problem(response);
  return response;
}

async function problem(response) {
  let code = `http_${response.status}`;
  let message = `${response.status} ${response.statusText}`.trim();
  try {
    const body = await response.json();
    const detail = body && typeof body.error === "object" ? body.error : body;
    if (detail && typeof detail.code === "string") code = detail.code;
    if (detail && typeof detail.message === "string") message = detail.message;
    else if (body && typeof body.error === "string") message = body.error;
  } catch {
    // Not JSON: the status line is all there is to say.
  }
  return new ApiError(response.status, code, message);
}

async function json(path, options) {
  const response = await send(path, options);
  return response.json();
}

const sessionPath = (id) => `/api/sessions/${encodeURIComponent(id)}`;

export const api = {
  capabilities: () => json("/api/capabilities"),
  sessions: async () => {
    const body = await json("/api/sessions");
    return Array.isArray(body) ? body : body.sessions || [];
  },
  create: async (title) => {
    const body = await json("/api/sessions/create", {
      method: "POST",
      body: title ? { title } : {},
    });
    return body.session || body;
  },
  history: async (id) => {
    const body = await json(`${sessionPath(id)}/history`);
    return Array.isArray(body) ? body : body.messages || body.history || [];
  },
  stop: (id) => json(`${sessionPath(id)}/stop`, { method: "POST", body: {} }),
  /** Opens the reply stream for a prompt; read it with readEvents. */
  stream: (id, message, signal) =>
    send(`${sessionPath(id)}/stream`, {
      method: "POST",
      body: { message },
      headers: { accept: "text/event-stream" },
      signal,
    }),
  /** Re-opens a session's events after `lastEventId` (reconnect). */
  events: (id, lastEventId, signal) =>
    send(`${sessionPath(id)}/events`, {
      headers: {
        accept: "text/event-stream",
        "last-event-id": String(lastEventId || 0),
      },
      signal,
    }),
};
