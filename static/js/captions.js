// Caption view: follows one session's caption feed (Server-Sent Events from
// /captions/{session}/events) and shows its last lines in large type. EventSource reconnects by
// itself after a network drop; the feed ends with `done` when the session ends.

import { browserToken, fetchWithToken, withToken } from "./access.js";

const params = new URLSearchParams(location.search);
const session = params.get("session") || "";
const box = document.getElementById("captions");
const status = document.getElementById("status");

/** Finals kept for display; the CSS shows only the last `lines` lines of them. */
const KEPT_FINALS = 6;
/** A 404 may be a reconnect racing the server's restart: retry a few times before giving up. */
const NOT_FOUND_RETRIES = 3;
const NOT_FOUND_RETRY_MS = 3000;

const finals = [];
/** The open utterance's partial: `stable` (committed, never changes) is a prefix of `text`. */
let partial = { text: "", stable: "" };
let notFound = 0;

function clampInt(value, min, max, fallback) {
  const n = Number.parseInt(value, 10);
  return Number.isFinite(n) ? Math.min(max, Math.max(min, n)) : fallback;
}

function configure() {
  const bg = params.get("bg");
  if (["green", "black", "white"].includes(bg)) document.body.dataset.bg = bg;
  document.body.dataset.status = params.get("status") === "0" ? "0" : "1";
  const root = document.documentElement.style;
  root.setProperty("--lines", String(clampInt(params.get("lines"), 1, 4, 2)));
  root.setProperty("--size", `${clampInt(params.get("size"), 12, 200, 48)}px`);
}

function setState(state, text) {
  document.body.dataset.state = state;
  status.textContent = text;
}

function render() {
  const lines = finals.map((text) => {
    const p = document.createElement("p");
    p.className = "final";
    p.textContent = text;
    return p;
  });
  if (partial.text) {
    // Committed words solid, the tail that may still change dimmed.
    const p = document.createElement("p");
    p.className = "partial";
    const stable = document.createElement("span");
    stable.className = "stable";
    stable.textContent = partial.stable;
    const tail = document.createElement("span");
    tail.className = "tentative";
    tail.textContent = partial.text.slice(partial.stable.length);
    p.append(stable, tail);
    lines.push(p);
  }
  box.replaceChildren(...lines);
}

function onCaption(msg) {
  if (msg.type === "partial") {
    // Servers before protocol field `stable` send none: then all of the text is tentative.
    const stable = typeof msg.stable === "string" && msg.text.startsWith(msg.stable) ? msg.stable : "";
    partial = { text: msg.text, stable };
  } else if (msg.type === "final") {
    partial = { text: "", stable: "" };
    const text = msg.text.trim();
    if (text) finals.push(text);
    finals.splice(0, Math.max(0, finals.length - KEPT_FINALS));
  }
  render();
}

async function follow() {
  const url = new URL(`captions/${encodeURIComponent(session)}/events`, location.href);
  const source = new EventSource(withToken(url, await browserToken()));
  source.onopen = () => {
    notFound = 0;
    setState("live", "");
  };
  source.onmessage = (event) => {
    let msg;
    try {
      msg = JSON.parse(event.data);
    } catch {
      return;
    }
    if (msg.type === "done") {
      source.close();
      partial = { text: "", stable: "" };
      render();
      setState("ended", "Session ended");
      return;
    }
    onCaption(msg);
  };
  source.onerror = () => {
    if (source.readyState === EventSource.CONNECTING) {
      // The browser retries by itself (the server asks for a 2 s delay).
      setState("reconnecting", "Reconnecting…");
      return;
    }
    // CLOSED: the server answered with an error status, most likely 404 for an unknown session.
    source.close();
    onClosed();
  };
}

/** The feed is gone: an ended session shows its stored text; an unknown one is retried a few
 * times, as it may be a reconnect racing the server's restart. */
async function onClosed() {
  if (!finals.length && (await showStored())) return;
  if (document.body.dataset.state === "live" || ++notFound > NOT_FOUND_RETRIES) {
    setState("ended", finals.length ? "Session ended" : "No live session with this id");
    return;
  }
  setState("reconnecting", "Waiting for the session…");
  setTimeout(follow, NOT_FOUND_RETRY_MS);
}

/** Shows the stored transcript of an ended session; false when there is none to show. */
async function showStored() {
  try {
    const res = await fetchWithToken(`v1/sessions/${encodeURIComponent(session)}/transcript`);
    if (!res.ok) return false;
    const body = await res.json();
    if (body.session.ended_ms === null) return false; // still running, or cut off by a crash
    for (const f of body.finals) onCaption({ type: "final", text: f.text });
    partial = { text: "", stable: "" };
    render();
    setState("ended", "Session ended");
    return true;
  } catch {
    return false;
  }
}

configure();
if (!session) {
  setState("ended", "Add ?session=ID to the address: the id is shown on the demo page.");
} else {
  setState("connecting", "Connecting…");
  follow();
}
