// The WebSocket side of the demo: one logical stream that survives dropped connections.
// Each connection is a server session (protocol v1, docs/protocol.md). When a connection drops
// while the user is still recording (network loss, a deploy closing with 1012 or 1001, the
// server being full) it reconnects with exponential backoff and a new session; audio captured
// meanwhile is kept, up to a bound, and sent first, so words spoken during the gap still appear.

import { browserToken, withToken } from "./access.js";

/** Close codes after which reconnecting cannot help: the request itself was refused. */
const FATAL_CLOSE_CODES = new Set([1003, 1007, 1008, 1009]);
const CLOSE_NORMAL = 1000;

const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 15000;
/** Up to this fraction of each delay is random, so clients of a restarted server spread out. */
const BACKOFF_JITTER = 0.3;

/** Audio kept while disconnected; older audio is dropped first. */
const MAX_PENDING_MS = 10000;
/** After eof, how long to wait for the server's finals and `done` before giving up: generous,
 * because a loaded server may take long over a final, and giving up loses it. */
const FINISH_TIMEOUT_MS = 60000;

const BYTES_PER_SAMPLE = 2;

/** ws:// or wss:// URL of the server's /ws, relative to this page so it works under a path prefix. */
export function streamUrl(sampleRate, pageUrl = location.href, token = null) {
  const url = new URL("ws", pageUrl);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.search = new URLSearchParams({
    sample_rate: String(sampleRate),
    encoding: "s16le",
    channels: "1",
  }).toString();
  return withToken(url, token).toString();
}

/** Delay before reconnect attempt `attempt` (0-based). */
export function backoffDelay(attempt, random = Math.random) {
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** attempt);
  return Math.round(base * (1 - BACKOFF_JITTER * random()));
}

export class Streamer {
  /**
   * @param {object} handlers
   * @param {(msg: object, session: {id: string, offsetMs: number}) => void} handlers.onMessage
   *   every server message, with its session and where that session starts in the recording
   * @param {(state: string, detail: object) => void} handlers.onState one of connecting, live,
   *   reconnecting, finishing, ended, failed
   */
  constructor({ onMessage, onState }) {
    this.onMessage = onMessage;
    this.onState = onState;
    this.ws = null;
    this.wanted = false;
    this.finishing = false;
    this.attempt = 0;
    this.retryTimer = null;
    this.finishTimer = null;
    this.pending = [];
    this.pendingBytes = 0;
    this.session = null;
  }

  /** Begins streaming audio captured at `sampleRate`. */
  start(sampleRate) {
    this.sampleRate = sampleRate;
    this.maxPendingBytes = Math.round((sampleRate * MAX_PENDING_MS) / 1000) * BYTES_PER_SAMPLE;
    this.wanted = true;
    this.finishing = false;
    this.attempt = 0;
    this.pending = [];
    this.pendingBytes = 0;
    this.connect();
  }

  async connect() {
    this.retryTimer = null;
    this.onState("connecting", { attempt: this.attempt });
    // A fresh token per connection: a reconnect after minutes must not reuse an expired one.
    // Audio captured meanwhile waits in `pending`.
    this.ws = null;
    const token = await browserToken();
    if (!this.wanted) return;
    const ws = new WebSocket(streamUrl(this.sampleRate, location.href, token));
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    this.session = null;
    // The session's time 0 is the first sample it receives: the oldest one still pending.
    this.nextSessionStartSample = null;
    ws.onopen = () => this.flushPending();
    ws.onmessage = (event) => this.receive(ws, event);
    ws.onclose = (event) => this.closed(ws, event);
  }

  /** Queues or sends one chunk of s16le audio whose first sample has index `firstSample`. */
  sendAudio(pcm, firstSample) {
    if (!this.wanted) return;
    if (this.ws && this.ws.readyState === WebSocket.OPEN && this.pending.length === 0) {
      this.noteFirstSample(firstSample);
      this.ws.send(pcm);
      return;
    }
    this.pending.push({ pcm, firstSample });
    this.pendingBytes += pcm.byteLength;
    while (this.pendingBytes > this.maxPendingBytes && this.pending.length > 1) {
      this.pendingBytes -= this.pending.shift().pcm.byteLength;
    }
  }

  flushPending() {
    for (const { pcm, firstSample } of this.pending) {
      this.noteFirstSample(firstSample);
      this.ws.send(pcm);
    }
    this.pending = [];
    this.pendingBytes = 0;
  }

  noteFirstSample(firstSample) {
    if (this.nextSessionStartSample === null) this.nextSessionStartSample = firstSample;
  }

  receive(ws, event) {
    if (ws !== this.ws || typeof event.data !== "string") return;
    let msg;
    try {
      msg = JSON.parse(event.data);
    } catch {
      return;
    }
    if (msg.type === "ready") {
      const startSample = this.nextSessionStartSample ?? 0;
      this.session = { id: msg.session, offsetMs: (startSample / this.sampleRate) * 1000 };
      this.attempt = 0;
      if (!this.finishing) this.onState("live", { session: msg.session });
    }
    if (msg.type === "error") this.lastError = msg;
    this.onMessage(msg, this.session || { id: "", offsetMs: 0 });
  }

  closed(ws, event) {
    if (ws !== this.ws) return;
    this.ws = null;
    const detail = { code: event.code, reason: event.reason, error: this.lastError, session: this.session };
    this.lastError = null;
    if (this.finishing || !this.wanted) {
      this.wanted = false;
      this.finishing = false;
      clearTimeout(this.finishTimer);
      this.onState("ended", detail);
      return;
    }
    if (FATAL_CLOSE_CODES.has(event.code)) {
      this.wanted = false;
      this.onState("failed", detail);
      return;
    }
    // Everything else is worth another try: 1006 (network), 1001/1012 (deploy), 1011, 1013
    // (server full), and 1000 when the server ended the session while we still record.
    const delay = backoffDelay(this.attempt);
    this.attempt += 1;
    this.onState("reconnecting", { ...detail, delay, attempt: this.attempt });
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  /** No more audio: the server sends outstanding finals, `done`, and closes. */
  finish() {
    this.wanted = false;
    if (this.retryTimer) {
      clearTimeout(this.retryTimer);
      this.retryTimer = null;
    }
    this.pending = [];
    this.pendingBytes = 0;
    const ws = this.ws;
    if (!ws) {
      this.onState("ended", {});
      return;
    }
    this.finishing = true;
    this.onState("finishing", {});
    if (ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify({ type: "eof" }));
    } else {
      ws.close(CLOSE_NORMAL);
    }
    this.finishTimer = setTimeout(() => ws.close(CLOSE_NORMAL), FINISH_TIMEOUT_MS);
  }
}
