// The chat page of `goml serve`: keeps the conversation in the page and streams each reply
// from /v1/chat/completions. Model output is only ever set as text (never parsed as HTML).
//
// Only a complete reply, or one stopped with the Stop button, stays in the conversation (a
// stopped reply is marked so, and is sent with the next question as it was shown). When the
// server answers with an error, the exchange is taken out again and the question goes back
// into the message box.

import { readSSE } from "./sse.js";

const $ = (id) => document.getElementById(id);
const ui = {
  server: $("server"),
  settings: $("settings"),
  system: $("system"),
  maxTokens: $("max-tokens"),
  temperature: $("temperature"),
  apiKey: $("api-key"),
  log: $("log"),
  empty: $("empty"),
  error: $("error"),
  composer: $("composer"),
  message: $("message"),
  send: $("send"),
  stop: $("stop"),
  newChat: $("new-chat"),
};

/** The conversation so far, without the system prompt (read from its field at each send). */
let history = [];
/** The model's name, from /healthz (sent as `model`); "" lets the server choose. */
let modelName = "";
/** Aborts the running request, when there is one. */
let controller = null;

/** An error reply from the server, with its OpenAI error message. */
class ServerError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// -- the server ------------------------------------------------------------------------------

async function loadStatus() {
  try {
    const response = await fetch("healthz", { headers: { Accept: "application/json" } });
    const health = await response.json();
    modelName = typeof health.model === "string" ? health.model : "";
    const cap = Number(health.max_tokens);
    if (Number.isInteger(cap) && cap > 0) {
      ui.maxTokens.max = String(cap);
      if (Number(ui.maxTokens.value) > cap) ui.maxTokens.value = String(cap);
    }
    if (health.auth_required) {
      for (const element of document.querySelectorAll(".auth")) element.hidden = false;
      ui.settings.open = true;
    }
    ui.server.textContent = modelName
      ? `Model: ${modelName}${cap > 0 ? ` (at most ${cap} tokens per reply)` : ""}`
      : "Connected";
  } catch (error) {
    ui.server.textContent = `The server's status is not available (${error.message}).`;
  }
}

function requestBody() {
  const messages = [];
  const system = ui.system.value.trim();
  if (system) messages.push({ role: "system", content: system });
  messages.push(...history.map(({ role, content }) => ({ role, content })));
  const body = { messages, stream: true };
  if (modelName) body.model = modelName;
  // The values go to the server as typed: it checks them and says what is wrong.
  if (ui.maxTokens.value !== "") body.max_tokens = Number(ui.maxTokens.value);
  if (ui.temperature.value !== "") body.temperature = Number(ui.temperature.value);
  return body;
}

async function errorFrom(response) {
  const text = await response.text();
  let message = "";
  try {
    message = JSON.parse(text)?.error?.message ?? "";
  } catch {
    // not JSON: show the text itself
  }
  if (!message) message = text.trim().slice(0, 300) || response.statusText || "no details";
  return new ServerError(response.status, message);
}

/** Stream the reply to the conversation into `onText`; returns the finish reason. */
async function streamReply(signal, onText) {
  const headers = { "Content-Type": "application/json", Accept: "text/event-stream" };
  const key = ui.apiKey.value.trim();
  if (key) headers.Authorization = `Bearer ${key}`;
  const response = await fetch("v1/chat/completions", {
    method: "POST",
    headers,
    body: JSON.stringify(requestBody()),
    signal,
  });
  if (!response.ok) throw await errorFrom(response);
  let finished = false;
  let finishReason = null;
  await readSSE(response.body, (data) => {
    if (data === "[DONE]") {
      finished = true;
      return;
    }
    let chunk;
    try {
      chunk = JSON.parse(data);
    } catch {
      throw new Error(`the server sent an event that is not JSON: ${data.slice(0, 80)}`);
    }
    if (chunk.error) {
      throw new ServerError(0, chunk.error.message ?? JSON.stringify(chunk.error));
    }
    const choice = chunk.choices?.[0];
    const text = choice?.delta?.content;
    if (typeof text === "string" && text) onText(text);
    if (choice?.finish_reason) finishReason = choice.finish_reason;
  });
  if (!finished) throw new Error("the reply ended before the server finished it");
  return finishReason;
}

// -- the page --------------------------------------------------------------------------------

function addMessage(role, text) {
  const item = document.createElement("li");
  item.className = `message ${role}`;
  item.dataset.role = role;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? "You" : "Assistant";
  const body = document.createElement("div");
  body.className = "text";
  body.append(document.createTextNode(text));
  const note = document.createElement("span");
  note.className = "note";
  item.append(who, body, note);
  ui.log.append(item);
  ui.empty.hidden = true;
  return item;
}

function nearBottom() {
  const root = document.scrollingElement;
  return root.scrollHeight - root.scrollTop - root.clientHeight < 80;
}

function scrollToEnd() {
  ui.log.lastElementChild?.scrollIntoView({ block: "end" });
}

function showError(message) {
  ui.error.textContent = message;
  ui.error.hidden = !message;
}

function setBusy(busy) {
  ui.send.disabled = busy;
  ui.stop.disabled = !busy;
  ui.newChat.disabled = busy;
  ui.log.setAttribute("aria-busy", String(busy));
}

async function send(question) {
  showError("");
  history.push({ role: "user", content: question });
  const asked = addMessage("user", question);
  const answer = addMessage("assistant", "");
  answer.dataset.state = "streaming";
  const textNode = answer.querySelector(".text").firstChild;
  const note = answer.querySelector(".note");
  const exchange = { role: "assistant", content: "" };
  controller = new AbortController();
  setBusy(true);
  scrollToEnd();
  try {
    const reason = await streamReply(controller.signal, (text) => {
      const follow = nearBottom();
      textNode.appendData(text);
      exchange.content += text;
      if (follow) scrollToEnd();
    });
    history.push(exchange);
    answer.dataset.state = "done";
    if (reason === "length") note.textContent = "cut off at the token limit";
  } catch (error) {
    if (error.name === "AbortError" && exchange.content) {
      history.push(exchange);
      answer.dataset.state = "stopped";
      note.textContent = "stopped";
    } else {
      // Nothing useful came back: take the exchange out and give the question back.
      history.pop();
      asked.remove();
      answer.remove();
      ui.empty.hidden = history.length > 0;
      if (!ui.message.value) ui.message.value = question;
      if (error.name !== "AbortError") showError(describe(error));
    }
  } finally {
    controller = null;
    setBusy(false);
    ui.message.focus();
  }
}

function describe(error) {
  if (error instanceof ServerError) {
    const status = error.status ? ` (HTTP ${error.status})` : "";
    const hint = error.status === 401 ? " Enter the server's API key in Settings." : "";
    if (error.status === 401) {
      for (const element of document.querySelectorAll(".auth")) element.hidden = false;
      ui.settings.open = true;
    }
    return `The server answered with an error${status}: ${error.message}${hint}`;
  }
  if (error instanceof TypeError) return `The server cannot be reached: ${error.message}`;
  return `Error: ${error.message}`;
}

function newChat() {
  history = [];
  ui.log.replaceChildren();
  ui.empty.hidden = false;
  showError("");
  ui.message.focus();
}

ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const question = ui.message.value.trim();
  if (!question || controller) return;
  ui.message.value = "";
  send(question);
});

ui.message.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.composer.requestSubmit();
  }
});

document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && controller) controller.abort();
});

// Aborting the fetch closes the connection; the server then cancels the generation.
ui.stop.addEventListener("click", () => controller?.abort());
ui.newChat.addEventListener("click", newChat);

loadStatus();
ui.message.focus();
