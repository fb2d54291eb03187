// The PI page: a workspace pane and a right rail with pi's chat sessions.

import { api, ApiError, AuthRequired, Unreachable } from "./api.js";
import { Conversation } from "./conversation.js";
import { readEvents } from "./sse.js";

const RAIL_KEY = "pibridge.rail";
const SESSION_KEY = "pibridge.session";
const TERMINAL = new Set(["done", "error"]);
const REFRESH_MS = 3000;
const RETRY_MS = [250, 500, 1000, 2000];

const $ = (id) => document.getElementById(id);

const ui = {
  connection: $("connection"),
  authProblem: $("auth-problem"),
  railToggle: $("rail-toggle"),
  rail: $("pi-rail"),
  modelLabel: $("model-label"),
  select: $("session-select"),
  newSession: $("new-session"),
  stopSession: $("stop-session"),
  sessionState: $("session-state"),
  messages: $("messages"),
  emptyHint: $("empty-hint"),
  composer: $("composer"),
  input: $("composer-input"),
  send: $("send"),
};

const page = {
  sessions: [],
  conversations: new Map(),
  activeId: null,
  streams: new Map(),
  offline: false,
  signedOut: false,
};

function wait(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// -- rail -------------------------------------------------------------------

function storedRail() {
  try {
    return localStorage.getItem(RAIL_KEY);
  } catch {
    return null;
  }
}

function setRail(open, remember = true) {
  ui.rail.hidden = !open;
  document.body.classList.toggle("rail-open", open);
  ui.railToggle.setAttribute("aria-expanded", String(open));
  ui.railToggle.textContent = open ? "Hide PI panel" : "Show PI panel";
  if (remember) {
    try {
      localStorage.setItem(RAIL_KEY, open ? "open" : "closed");
    } catch {
      // Storage may be off; the rail still works for this visit.
    }
  }
  if (open) scrollToEnd(true);
}

// -- connection and sign-in -------------------------------------------------

function showProblem(error) {
  if (error instanceof AuthRequired) {
    page.signedOut = true;
    ui.authProblem.textContent = error.message;
    ui.authProblem.hidden = false;
    ui.connection.textContent = "Not signed in: open the URL the server printed.";
    ui.connection.className = "connection bad";
    return;
  }
  if (error instanceof Unreachable) {
    ui.connection.textContent = "Server unreachable, retrying…";
    ui.connection.className = "connection bad";
    watchServer();
    return;
  }
  const conversation = activeConversation();
  const message = error instanceof ApiError ? error.message : `Unexpected problem: ${error.message}`;
  if (conversation) conversation.system(message, "error");
  else ui.connection.textContent = message;
  scrollToEnd(true);
}

function connected() {
  if (page.signedOut) {
    page.signedOut = false;
    ui.authProblem.hidden = true;
  }
  ui.connection.textContent = "Connected";
  ui.connection.className = "connection good";
}

let watching = false;

/** After losing the server, poll until it answers, then pick up where we were. */
async function watchServer() {
  if (watching) return;
  watching = true;
  for (let attempt = 0; ; attempt += 1) {
    await wait(RETRY_MS[Math.min(attempt, RETRY_MS.length - 1)]);
    try {
      await loadCapabilities();
      break;
    } catch (error) {
      if (error instanceof AuthRequired) {
        showProblem(error);
        break;
      }
    }
  }
  watching = false;
  await refreshSessions().catch(() => {});
}

// -- capabilities -----------------------------------------------------------

function describeModel(caps) {
  const service = (caps.services && caps.services.pi) || {};
  let model = service.model ?? caps.model ?? null;
  let offline = service.offline ?? caps.offline ?? null;
  if (model && typeof model === "object") {
    offline = model.offline ?? offline;
    model = model.label || model.name || model.id || null;
  }
  if (offline === null && typeof model === "string") offline = /offline/i.test(model);
  return { model, offline: Boolean(offline), problem: service.problem || null };
}

async function loadCapabilities() {
  const caps = await api.capabilities();
  connected();
  const { model, offline, problem } = describeModel(caps);
  page.offline = offline;
  const service = (caps.services && caps.services.pi) || {};
  $("info-version").textContent = caps.version ? `pibridge ${caps.version}` : "pibridge";
  const features = Object.entries(caps.features || {})
    .filter(([, on]) => on)
    .map(([name]) => name);
  $("info-features").textContent = features.length ? features.join(", ") : "none";
  $("info-service").textContent = service.mode
    ? `${service.mode}${service.url ? ` at ${service.url}` : ""}`
    : "not offered";
  let detail;
  if (!model) detail = "chosen by the server (it did not say which)";
  else if (offline) detail = `${model}; no provider is used, replies are canned`;
  else detail = model;
  if (problem) detail += ` (not ready: ${problem})`;
  const label = `${offline ? "Offline model" : "Model"}: ${detail}`;
  $("info-model").textContent = label;
  ui.modelLabel.textContent = label;
  ui.modelLabel.classList.toggle("offline", offline);
  return caps;
}

// -- sessions ---------------------------------------------------------------

function activeConversation() {
  return page.activeId ? page.conversations.get(page.activeId) || null : null;
}

function sessionView(id) {
  return page.sessions.find((session) => session.id === id) || null;
}

function optionLabel(session) {
  return `${session.title || session.id} (${session.state})`;
}

let listedSignature = "";

function renderSessionList() {
  // Rebuilding the options closes an open drop-down: only do it on a change.
  const signature = JSON.stringify([page.activeId, page.sessions.map((s) => [s.id, optionLabel(s)])]);
  if (signature === listedSignature) {
    renderSessionState();
    return;
  }
  listedSignature = signature;
  const options = page.sessions.map((session) => {
    const option = document.createElement("option");
    option.value = session.id;
    option.textContent = optionLabel(session);
    return option;
  });
  if (options.length === 0) {
    const none = document.createElement("option");
    none.value = "";
    none.textContent = "No session";
    options.push(none);
  }
  ui.select.replaceChildren(...options);
  ui.select.value = page.activeId || "";
  renderSessionState();
}

function renderSessionState() {
  const session = page.activeId ? sessionView(page.activeId) : null;
  const streaming = page.activeId !== null && page.streams.has(page.activeId);
  if (!session) {
    ui.sessionState.textContent = "";
    ui.stopSession.disabled = true;
    return;
  }
  let state = session.state;
  if (streaming && state !== "stopping") state = "streaming";
  const words = {
    stopped: "Stopped (sending a message resumes it)",
    failed: "Failed (sending a message restarts it)",
    streaming: "Replying…",
    starting: "Starting…",
    idle: "Ready",
    stopping: "Stopping…",
  };
  ui.sessionState.textContent = words[state] || state;
  ui.sessionState.dataset.state = state;
  ui.stopSession.disabled = state === "stopped" || state === "failed" || state === "stopping";
}

function updateSession(id, changes) {
  const session = sessionView(id);
  if (!session) return;
  Object.assign(session, changes);
  const option = [...ui.select.options].find((item) => item.value === id);
  if (option) option.textContent = optionLabel(session);
  if (id === page.activeId) renderSessionState();
}

async function refreshSessions() {
  const sessions = await api.sessions();
  connected();
  page.sessions = sessions;
  if (page.activeId && !sessionView(page.activeId)) page.activeId = null;
  if (!page.activeId && sessions.length) {
    let remembered = null;
    try {
      remembered = localStorage.getItem(SESSION_KEY);
    } catch {
      remembered = null;
    }
    const pick = sessionView(remembered) || sessions[sessions.length - 1];
    renderSessionList();
    await selectSession(pick.id);
    return;
  }
  renderSessionList();
  for (const session of sessions) {
    // A reply that was streaming when the connection broke, still going on the server.
    if (session.state === "streaming" && page.conversations.has(session.id) && !page.streams.has(session.id)) {
      follow(session.id, null);
    }
  }
}

async function selectSession(id) {
  page.activeId = id || null;
  try {
    if (id) localStorage.setItem(SESSION_KEY, id);
  } catch {
    // Not remembered across visits; fine.
  }
  ui.select.value = id || "";
  renderSessionState();
  if (!id) {
    ui.messages.replaceChildren(ui.emptyHint);
    return;
  }
  let conversation = page.conversations.get(id);
  if (!conversation) {
    conversation = new Conversation(id);
    page.conversations.set(id, conversation);
    const view = sessionView(id);
    try {
      conversation.renderHistory(await api.history(id));
    } catch (error) {
      showProblem(error);
    }
    const replying = view && (view.state === "streaming" || view.state === "starting");
    if (replying && !page.streams.has(id)) follow(id, null, true);
    else if (view && typeof view.last_event_id === "number") {
      conversation.lastEventId = Math.max(conversation.lastEventId, view.last_event_id);
    }
  }
  if (page.activeId !== id) return;
  ui.messages.replaceChildren(conversation.list);
  scrollToEnd(true);
}

async function createSession() {
  const session = await api.create();
  page.sessions = page.sessions.filter((item) => item.id !== session.id).concat([session]);
  const conversation = new Conversation(session.id);
  if (typeof session.last_event_id === "number") conversation.lastEventId = session.last_event_id;
  page.conversations.set(session.id, conversation);
  page.activeId = session.id;
  renderSessionList();
  await selectSession(session.id);
  return session;
}

async function stopSession() {
  const id = page.activeId;
  if (!id) return;
  updateSession(id, { state: "stopping" });
  const result = await api.stop(id);
  const view = (result && (result.session || result)) || {};
  updateSession(id, { state: typeof view.state === "string" ? view.state : "stopped" });
  const conversation = page.conversations.get(id);
  if (conversation) conversation.system("Session stopped. Sending a message resumes it.", "stopped");
  scrollToEnd(true);
  refreshSessions().catch(() => {});
}

// -- streaming --------------------------------------------------------------

let scrollPending = false;
let stickToEnd = true;

let lastScrollTop = 0;

// Follow the newest text until the reader scrolls up; scrolling back to the
// end follows again. Growth alone never un-sticks (it fires no scroll event).
ui.messages.addEventListener("scroll", () => {
  const { scrollTop, scrollHeight, clientHeight } = ui.messages;
  if (scrollHeight - scrollTop - clientHeight < 40) stickToEnd = true;
  else if (scrollTop < lastScrollTop) stickToEnd = false;
  lastScrollTop = scrollTop;
});

/** Keep the newest text in view, at most once per frame. */
function scrollToEnd(force = false) {
  if (force) stickToEnd = true;
  if (!stickToEnd || scrollPending) return;
  scrollPending = true;
  requestAnimationFrame(() => {
    scrollPending = false;
    if (stickToEnd) ui.messages.scrollTop = ui.messages.scrollHeight;
  });
}

/**
 * For a page that arrives while a reply streams: the saved history has only
 * the prompt, so the events are replayed from the start of the log and this
 * lets through those from the current turn's `session` event on. The events
 * route names the current turn in its first (header) event.
 */
class CurrentTurnOnly {
  constructor() {
    this.turn = null;
    this.open = false;
  }

  admits(type, data) {
    if (this.open) return true;
    if (type === "gap") {
      // The turn's start is gone from the log: show what is left of it.
      this.open = true;
    } else if (type === "session" && this.turn === null) {
      this.turn = data.turn;
      return false;
    } else if (type === "session" && data.turn === this.turn) {
      this.open = true;
    }
    return this.open;
  }
}

function handleEvent(id, event, filter = null) {
  const conversation = page.conversations.get(id);
  if (!conversation) return false;
  let data = {};
  try {
    data = event.data ? JSON.parse(event.data) : {};
  } catch {
    data = { text: event.data };
  }
  if (filter !== null && !filter.admits(event.type, data)) return true;
  const fresh = conversation.apply(event.type, data, event.id);
  if (!fresh) return true;
  if (event.type === "session" && data.state) updateSession(id, { state: data.state });
  if (event.type === "done") updateSession(id, { state: "idle" });
  if (event.type === "gap") reloadHistory(id);
  if (id === page.activeId) scrollToEnd();
  return true;
}

async function reloadHistory(id) {
  const conversation = page.conversations.get(id);
  if (!conversation) return;
  const seen = conversation.lastEventId;
  conversation.renderHistory(await api.history(id));
  conversation.lastEventId = seen;
  if (id === page.activeId) scrollToEnd(true);
}

/**
 * Read a stream of a session's events. Resolves true as soon as a terminal
 * event (done or error) arrives, false if the stream ended first. The reply
 * stream is left to end by itself; a reconnect stream is closed at once.
 */
function consume(id, response, closeAtEnd, filter = null) {
  return new Promise((resolve, reject) => {
    let finished = false;
    readEvents(response, (event) => {
      handleEvent(id, event, filter);
      if (TERMINAL.has(event.type) && !finished) {
        finished = true;
        resolve(true);
        return !closeAtEnd;
      }
      return true;
    }).then(
      () => resolve(finished),
      (error) => {
        if (!finished) reject(error);
      },
    );
  });
}

/**
 * Follow a session's reply: `opening` is the first response (the POST
 * stream), or null to start from a reconnect. A broken stream is resumed
 * with Last-Event-ID; events already shown are skipped by id.
 */
async function follow(id, opening, catchUp = false) {
  if (page.streams.has(id)) return;
  const controller = new AbortController();
  page.streams.set(id, controller);
  renderSessionState();
  const filter = catchUp ? new CurrentTurnOnly() : null;
  const conversation = page.conversations.get(id);
  const seen = () => (conversation ? conversation.lastEventId : 0);
  try {
    let response = opening;
    let before = seen();
    for (let attempt = 0; ; ) {
      try {
        const reconnecting = response === null;
        const replaying = filter !== null && !filter.open;
        before = seen();
        if (reconnecting) response = await api.events(id, replaying ? 0 : seen(), controller.signal);
        if (await consume(id, response, reconnecting, replaying ? filter : null)) return;
        attempt = 0;
      } catch (error) {
        if (controller.signal.aborted || error instanceof AuthRequired) throw error;
        if (error instanceof ApiError) {
          // No way to resume this stream: show what the server saved instead.
          await finishFromHistory(id);
          return;
        }
        ui.connection.textContent = "Connection lost, reconnecting…";
        ui.connection.className = "connection bad";
        attempt += 1;
      }
      response = null;
      await wait(RETRY_MS[Math.min(attempt, RETRY_MS.length - 1)]);
      const session = await api.sessions().then(
        (sessions) => {
          page.sessions = sessions;
          renderSessionList();
          connected();
          return sessions.find((item) => item.id === id) || null;
        },
        () => undefined,
      );
      if (session === null) return;
      if (session && session.state !== "streaming" && session.state !== "starting") {
        // The turn is over on the server. Fetch what is missing once more;
        // if that brought nothing, the saved history is the answer.
        if (seen() >= (session.last_event_id ?? Infinity)) return;
        if (session.last_event_id === undefined || seen() === before) {
          await finishFromHistory(id);
          return;
        }
      }
    }
  } catch (error) {
    if (!controller.signal.aborted) showProblem(error);
  } finally {
    page.streams.delete(id);
    renderSessionState();
  }
}

async function finishFromHistory(id) {
  try {
    await reloadHistory(id);
  } catch (error) {
    showProblem(error);
  }
}

async function sendMessage() {
  const text = ui.input.value.trim();
  if (!text) return;
  ui.send.disabled = true;
  try {
    if (!page.activeId) await createSession();
    const id = page.activeId;
    if (page.streams.has(id)) {
      activeConversation().system("pi is still replying; wait for it or stop the session.", "warning");
      scrollToEnd(true);
      return;
    }
    const conversation = page.conversations.get(id);
    const response = await api.stream(id, text);
    ui.input.value = "";
    conversation.user(text);
    updateSession(id, { state: "streaming" });
    scrollToEnd(true);
    follow(id, response);
  } catch (error) {
    showProblem(error);
  } finally {
    ui.send.disabled = false;
  }
}

// -- wiring -----------------------------------------------------------------

function wire() {
  ui.railToggle.addEventListener("click", () => setRail(ui.rail.hidden));
  ui.select.addEventListener("change", () => selectSession(ui.select.value).catch(showProblem));
  ui.newSession.addEventListener("click", () => createSession().catch(showProblem));
  ui.stopSession.addEventListener("click", () => stopSession().catch(showProblem));
  ui.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    sendMessage();
  });
  ui.input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      sendMessage();
    }
  });
  setInterval(() => {
    if (document.hidden || watching || page.signedOut) return;
    refreshSessions().catch((error) => {
      if (error instanceof Unreachable || error instanceof AuthRequired) showProblem(error);
    });
  }, REFRESH_MS);
}

async function start() {
  const params = new URLSearchParams(location.search);
  const wantsPi = params.get("agent_mode") === "pi";
  const stored = storedRail();
  setRail(wantsPi || stored !== "closed", wantsPi);
  wire();
  try {
    await loadCapabilities();
    await refreshSessions();
  } catch (error) {
    showProblem(error);
  }
  document.body.dataset.ready = "true";
}

start();
