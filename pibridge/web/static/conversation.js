// One session's conversation as DOM. Streaming appends to a Text node, so a
// long reply costs one small DOM change per delta, never a re-render.

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function pretty(value) {
  if (typeof value === "string") return value;
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

/** A collapsible block for one tool call: name, arguments, then its result. */
class ToolBlock {
  constructor(name, args) {
    this.root = element("details", "tool");
    this.root.dataset.tool = name;
    this.root.open = true;
    const summary = element("summary", "tool-summary");
    this.title = element("span", "tool-name", `Tool: ${name}`);
    this.status = element("span", "tool-status", "running…");
    summary.append(this.title, " ", this.status);
    const argsLabel = element("div", "tool-label", "Arguments");
    const argsBody = element("pre", "tool-args", pretty(args || {}));
    this.resultLabel = element("div", "tool-label", "Result");
    this.result = element("pre", "tool-result", "");
    this.resultLabel.hidden = true;
    this.result.hidden = true;
    this.root.append(summary, argsLabel, argsBody, this.resultLabel, this.result);
    this.root.classList.add("running");
  }

  finish(isError, summary) {
    this.root.classList.remove("running");
    this.root.classList.toggle("failed", Boolean(isError));
    this.status.textContent = isError ? "failed" : "done";
    this.resultLabel.hidden = false;
    this.result.hidden = false;
    this.result.textContent = summary || "(no output)";
  }
}

/** A reply from pi: text segments and tool blocks in the order they came. */
class ReplyTurn {
  constructor(list) {
    this.root = element("li", "message reply");
    this.root.setAttribute("aria-label", "Reply");
    this.body = element("div", "message-body");
    this.root.append(this.body);
    this.text = null;
    this.tools = new Map();
    this.finished = false;
    list.append(this.root);
  }

  get isEmpty() {
    return this.body.childNodes.length === 0;
  }

  appendText(text) {
    if (!text) return;
    if (this.text === null) {
      const segment = element("p", "text");
      this.text = document.createTextNode("");
      segment.append(this.text);
      this.body.append(segment);
    }
    this.text.appendData(text);
  }

  toolStarted(id, name, args) {
    const block = new ToolBlock(name, args);
    this.tools.set(id || `anon-${this.tools.size}`, block);
    this.body.append(block.root);
    this.text = null;
    return block;
  }

  toolEnded(id, name, isError, summary) {
    let block = this.tools.get(id);
    if (!block) block = this.toolStarted(id, name, {});
    block.finish(isError, summary);
  }

  note(kind, text) {
    this.root.append(element("p", `note ${kind}`, text));
  }

  finish(stateClass) {
    this.finished = true;
    this.root.classList.add(stateClass);
    this.root.removeAttribute("aria-busy");
  }
}

/** Everything shown for one session; kept while the user looks at another. */
export class Conversation {
  constructor(sessionId) {
    this.sessionId = sessionId;
    this.list = element("ol", "conversation");
    this.list.dataset.session = sessionId;
    this.current = null;
    this.lastEventId = 0;
  }

  clear() {
    this.list.replaceChildren();
    this.current = null;
  }

  user(text, pending = false) {
    const item = element("li", "message user");
    item.setAttribute("aria-label", "You said");
    item.append(element("p", "text", text));
    if (pending) item.classList.add("pending");
    this.list.append(item);
    this.current = null;
    return item;
  }

  system(text, kind = "info") {
    const item = element("li", `message system ${kind}`, text);
    item.setAttribute("role", kind === "error" ? "alert" : "status");
    this.list.append(item);
    return item;
  }

  /** The reply being streamed, started on first use. */
  turn() {
    if (this.current === null || this.current.finished) {
      this.current = new ReplyTurn(this.list);
      this.current.root.setAttribute("aria-busy", "true");
    }
    return this.current;
  }

  /**
   * Apply one event from the stream. Returns false for an event already
   * applied (same or older id), which is how a reconnect avoids repeating text.
   */
  apply(type, data, id) {
    const numeric = Number(id);
    if (id !== null && id !== undefined && id !== "" && Number.isFinite(numeric)) {
      if (numeric <= this.lastEventId) return false;
      this.lastEventId = numeric;
    }
    switch (type) {
      case "delta":
        this.turn().appendText(data.text || "");
        break;
      case "tool_start":
        this.turn().toolStarted(data.tool_call_id, data.name, data.args);
        break;
      case "tool_end":
        this.turn().toolEnded(data.tool_call_id, data.name, data.is_error, data.summary);
        break;
      case "done": {
        const turn = this.turn();
        if (turn.isEmpty && data.text) turn.appendText(data.text);
        const usage = data.usage || {};
        if (usage.totalTokens) turn.note("usage", `${usage.totalTokens} tokens`);
        turn.finish("complete");
        break;
      }
      case "error": {
        const turn = this.turn();
        const stopped = data.code === "aborted" || data.code === "stopped";
        turn.note(
          stopped ? "stopped" : "error",
          stopped ? `Stopped: ${data.message || "the reply was stopped."}` : `Error: ${data.message || data.code}`,
        );
        turn.finish(stopped ? "stopped" : "failed");
        break;
      }
      case "gap":
        this.system(data.message || "Some of the reply was lost; reloading the conversation.", "warning");
        break;
      default:
        // session and kinds this page does not know: nothing to draw.
        break;
    }
    return true;
  }

  /** Draw the saved conversation (GET history). */
  renderHistory(messages) {
    this.clear();
    let turn = null;
    for (const message of messages) {
      if (message.role === "user") {
        this.user(message.text || "", message.saved === false);
        turn = null;
      } else if (message.role === "assistant") {
        if (turn === null) turn = this.turn();
        turn.appendText(message.text || "");
        for (const call of message.tool_calls || []) turn.toolStarted(call.id, call.name, call.args);
        if (message.error) turn.note("error", `Error: ${message.error}`);
        if (message.stop_reason === "aborted") turn.note("stopped", "Stopped before it finished.");
        if (!(message.tool_calls || []).length) {
          turn.finish("complete");
          turn = null;
        }
      } else if (message.role === "tool_result") {
        if (turn === null) turn = this.turn();
        const open = [...turn.tools.entries()].find(([, block]) => block.root.classList.contains("running"));
        if (open) turn.toolEnded(open[0], message.tool_name, message.is_error, message.text);
        else turn.toolEnded(null, message.tool_name || "tool", message.is_error, message.text);
      }
    }
    if (turn !== null && !turn.finished) turn.finish("complete");
    this.current = null;
  }
}
