// Server-sent events read from a fetch() body: the stream is a POST, which
// EventSource cannot make. Parsing follows the HTML event-stream rules.

/** Incremental parser: feed decoded text, get whole events back. */
export class SseParser {
  constructor() {
    this.buffer = "";
    this.reset();
  }

  reset() {
    this.eventType = "";
    this.data = [];
    this.id = null;
    this.hasData = false;
  }

  /** Returns the events completed by this chunk, each {type, data, id}. */
  feed(text) {
    this.buffer += text;
    const events = [];
    let start = 0;
    for (;;) {
      const match = /\r\n|\r|\n/g;
      match.lastIndex = start;
      const found = match.exec(this.buffer);
      if (found === null) break;
      // A lone CR at the very end may be the first half of CRLF: wait for more.
      if (found[0] === "\r" && found.index === this.buffer.length - 1) break;
      const line = this.buffer.slice(start, found.index);
      start = found.index + found[0].length;
      const event = this.line(line);
      if (event !== null) events.push(event);
    }
    this.buffer = this.buffer.slice(start);
    return events;
  }

  line(line) {
    if (line === "") {
      if (!this.hasData) {
        this.reset();
        return null;
      }
      const event = {
        type: this.eventType || "message",
        data: this.data.join("\n"),
        id: this.id,
      };
      this.reset();
      return event;
    }
    if (line.startsWith(":")) return null;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.eventType = value;
    else if (field === "data") {
      this.data.push(value);
      this.hasData = true;
    } else if (field === "id" && !value.includes("\0")) this.id = value;
    return null;
  }
}

/**
 * Read a fetch Response body as SSE, calling onEvent for each event.
 * Resolves when the body ends; rejects when the connection breaks.
 */
export async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  const parser = new SseParser();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    for (const event of parser.feed(decoder.decode(value, { stream: true }))) {
      if (onEvent(event) === false) {
        await reader.cancel();
        return;
      }
    }
  }
  for (const event of parser.feed(decoder.decode())) onEvent(event);
}
