// The transcript: one entry per utterance, keyed by session and utterance number (numbers start
// again in each session after a reconnect). A partial shows provisionally and is replaced in
// place by its final; times are kept relative to the start of the recording, so the exports
// stay consistent across sessions.

import { formatClock, toSrt, toText, toVtt } from "./subtitles.js";

/** How close to the bottom (px) counts as "following": only then does new text scroll the view. */
const FOLLOW_SLACK_PX = 48;

export class Transcript {
  /** @param {HTMLOListElement} list the `role="log"` element entries are rendered into */
  constructor(list, onChange = () => {}) {
    this.list = list;
    this.onChange = onChange;
    this.entries = new Map();
  }

  /** Applies a server message from `session` ({ id, offsetMs }). */
  apply(msg, session) {
    const key = `${session.id}:${msg.utterance}`;
    switch (msg.type) {
      case "partial":
        this.partial(key, msg, session);
        break;
      case "final":
        this.final(key, msg, session);
        break;
      case "error":
        if (msg.utterance !== undefined && msg.utterance !== null) this.failed(key, msg);
        break;
      default:
        break;
    }
  }

  partial(key, msg, session) {
    let entry = this.entries.get(key);
    if (entry && entry.final) return; // a late partial never overwrites a final
    if (!entry) {
      entry = { key, partials: 0, final: false };
      this.entries.set(key, entry);
    }
    entry.partials += 1;
    Object.assign(entry, times(msg, session), { text: msg.text, stable: stableOf(msg) });
    this.render(entry);
  }

  final(key, msg, session) {
    const entry = this.entries.get(key) || { key, partials: 0 };
    Object.assign(entry, times(msg, session), {
      final: true,
      text: msg.text.trim(),
      source: msg.source,
      fallbackReason: msg.fallback_reason || "",
      latencyMs: msg.latency_ms,
    });
    this.entries.set(key, entry);
    if (entry.text === "") {
      // Nothing was said after all (a cough, a click): drop the provisional line.
      this.remove(entry);
      return;
    }
    this.render(entry);
    this.onChange();
  }

  failed(key, msg) {
    const entry = this.entries.get(key);
    if (!entry || entry.final) return;
    entry.failed = msg.message;
    this.render(entry);
  }

  /** A session closed: its provisional lines will never get a final, so say so. */
  endSession(sessionId) {
    for (const entry of this.entries.values()) {
      if (entry.key.startsWith(`${sessionId}:`) && !entry.final && !entry.failed) {
        entry.interrupted = true;
        this.render(entry);
      }
    }
  }

  remove(entry) {
    if (entry.el) entry.el.remove();
    this.entries.delete(entry.key);
    this.onChange();
  }

  clear() {
    this.entries.clear();
    this.list.replaceChildren();
    this.onChange();
  }

  render(entry) {
    const follow = this.isFollowing();
    const el = entry.final ? finalElement(entry) : partialElement(entry);
    // Finals get a new node rather than an edited one: the log announces additions, and the
    // partials it replaces are hidden from screen readers, so each line is read out once.
    if (entry.el) entry.el.replaceWith(el);
    else this.insertInOrder(el, entry.startMs);
    entry.el = el;
    if (follow) this.list.scrollTop = this.list.scrollHeight;
  }

  /** Lines stay in speech order even when a later utterance shows a partial before an earlier
   * one's final arrives (audio buffered during a reconnect is sent in one burst). */
  insertInOrder(el, startMs) {
    let next = null;
    // Lines almost always arrive in order, so search from the end.
    for (let node = this.list.lastElementChild; node; node = node.previousElementSibling) {
      if (Number(node.dataset.startMs) <= startMs) break;
      next = node;
    }
    this.list.insertBefore(el, next);
  }

  isFollowing() {
    const l = this.list;
    return l.scrollHeight - l.scrollTop - l.clientHeight <= FOLLOW_SLACK_PX;
  }

  /** Finals in recording order, as { startMs, endMs, text }. */
  cues() {
    return [...this.entries.values()]
      .filter((e) => e.final && e.text)
      .sort((a, b) => a.startMs - b.startMs)
      .map(({ startMs, endMs, text }) => ({ startMs, endMs, text }));
  }

  get finalCount() {
    return this.cues().length;
  }

  export(format) {
    const cues = this.cues();
    if (format === "srt") return toSrt(cues);
    if (format === "vtt") return toVtt(cues);
    return toText(cues);
  }
}

function times(msg, session) {
  return {
    startMs: Math.round(session.offsetMs + msg.start_ms),
    endMs: Math.round(session.offsetMs + msg.end_ms),
  };
}

function baseElement(entry, className) {
  const li = document.createElement("li");
  li.className = `utterance ${className}`;
  li.dataset.startMs = String(entry.startMs);
  li.dataset.endMs = String(entry.endMs);
  li.dataset.partials = String(entry.partials);
  const time = document.createElement("span");
  time.className = "time";
  time.textContent = formatClock(entry.startMs);
  const text = document.createElement("span");
  text.className = "text";
  if (!entry.final && entry.stable) {
    // Committed words never change; the tentative tail may still be revised.
    const stable = document.createElement("span");
    stable.className = "stable";
    stable.textContent = entry.stable;
    const tail = document.createElement("span");
    tail.className = "tentative";
    tail.textContent = entry.text.slice(entry.stable.length);
    text.append(stable, tail);
  } else {
    text.textContent = entry.text;
  }
  li.append(time, text);
  return li;
}

/** The committed prefix of a partial (servers before protocol field `stable` send none). */
function stableOf(msg) {
  const stable = typeof msg.stable === "string" ? msg.stable : "";
  return msg.text.startsWith(stable) ? stable : "";
}

/** A provisional line: still listening, or left without a final (error, connection closed). */
function partialElement(entry) {
  const state = entry.failed ? "failed" : entry.interrupted ? "interrupted" : "partial";
  const li = baseElement(entry, `provisional ${state}`);
  li.setAttribute("aria-hidden", "true");
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.textContent = {
    partial: "listening…",
    failed: `not transcribed: ${entry.failed}`,
    interrupted: "not finalised: the connection closed",
  }[state];
  li.append(meta);
  return li;
}

function finalElement(entry) {
  const li = baseElement(entry, "final");
  li.dataset.source = entry.source;
  li.dataset.latencyMs = String(entry.latencyMs);
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.append(sourceBadge(entry));
  const latency = document.createElement("span");
  latency.className = "latency";
  latency.textContent = `${entry.latencyMs} ms`;
  latency.title = "Time from the end of speech to this final transcript";
  meta.append(latency);
  li.append(meta);
  return li;
}

function sourceBadge(entry) {
  const badge = document.createElement("span");
  badge.className = "badge";
  if (entry.source === "openai") {
    badge.classList.add("badge-openai");
    badge.textContent = "OpenAI";
    badge.title = "Final text from OpenAI";
  } else if (entry.fallbackReason) {
    badge.classList.add("badge-fallback");
    badge.textContent = "local fallback";
    badge.title = `OpenAI was not used: ${entry.fallbackReason}`;
    badge.dataset.reason = entry.fallbackReason;
    // Focusable so keyboard users can reveal the reason too (shown by CSS on focus).
    badge.tabIndex = 0;
    badge.setAttribute("aria-label", `local fallback: ${entry.fallbackReason}`);
  } else {
    badge.classList.add("badge-local");
    badge.textContent = "local";
    badge.title = "Final text from the local whisper model";
  }
  return badge;
}
