// Server-Sent Events over fetch: a parser that takes text in arbitrary pieces (a network chunk
// may end in the middle of a line, of a "\r\n", or of a UTF-8 character) and reports each
// event's data once the event is complete.

/** Parses an SSE byte stream's text; calls onData(data) for every event that carries data. */
export class SSEParser {
  constructor(onData) {
    this.onData = onData;
    this.buffer = "";
    this.data = [];
  }

  /** Add the next piece of text. */
  feed(text) {
    this.buffer += text;
    const lineEnd = /\r\n|\r|\n/g;
    let start = 0;
    let match;
    while ((match = lineEnd.exec(this.buffer)) !== null) {
      // A "\r" that ends the buffer may be the first half of a "\r\n": wait for more text.
      if (match[0] === "\r" && lineEnd.lastIndex === this.buffer.length) break;
      this.line(this.buffer.slice(start, match.index));
      start = lineEnd.lastIndex;
    }
    this.buffer = this.buffer.slice(start);
  }

  /** The stream ended: a last line without its line end still counts, then the event ends. */
  end() {
    const rest = this.buffer.replace(/\r$/, "");
    this.buffer = "";
    if (rest) this.line(rest);
    this.line("");
  }

  line(line) {
    if (line === "") {
      if (this.data.length) {
        const data = this.data.join("\n");
        this.data = [];
        this.onData(data);
      }
      return;
    }
    if (line.startsWith(":")) return; // a comment (keep-alive)
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    // event, id and retry are not used by OpenAI-style streams.
  }
}

/**
 * Read a fetch response body as SSE, calling onData(data) per event, until the body ends.
 * An exception from onData stops reading (the body is cancelled) and is rethrown.
 */
export async function readSSE(body, onData) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const parser = new SSEParser(onData);
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      parser.feed(decoder.decode(value, { stream: true }));
    }
    parser.feed(decoder.decode());
    parser.end();
  } catch (error) {
    reader.cancel().catch(() => {});
    throw error;
  } finally {
    try {
      reader.releaseLock();
    } catch {
      // already released by the cancel above
    }
  }
}
