// The demo page: wires the microphone, the stream and the transcript to the controls.

import { MicCapture, describeMicError, listMicrophones, micSupportProblem } from "./audio-capture.js";
import { fetchWithToken } from "./access.js";
import { Streamer } from "./connection.js";
import { Transcript } from "./transcript.js";

const $ = (id) => document.getElementById(id);
const ui = {
  start: $("start"),
  mic: $("mic"),
  level: $("level"),
  conn: $("conn"),
  micMessage: $("mic-message"),
  errorMessage: $("error-message"),
  session: $("session"),
  sessionId: $("session-id"),
  captionLink: $("caption-link"),
  captionLinkGreen: $("caption-link-green"),
  list: $("transcript"),
  empty: $("transcript-empty"),
  copy: $("copy"),
  copied: $("copied"),
  downloads: [...document.querySelectorAll("[data-download]")],
  clear: $("clear"),
  reopen: $("reopen"),
  reopenId: $("reopen-id"),
};

const transcript = new Transcript(ui.list, updateActions);
const streamer = new Streamer({ onMessage, onState });
const capture = new MicCapture({
  onChunk: (pcm, firstSample) => streamer.sendAudio(pcm, firstSample),
  onLevel: (value) => (ui.level.value = value),
  onEnded: () => {
    showMicMessage("The microphone stopped (unplugged, or access was revoked). Recording ended.");
    stop();
  },
});
let recording = false;

function show(el, text) {
  el.textContent = text || "";
  el.hidden = !text;
}
const showMicMessage = (text) => show(ui.micMessage, text);
const showError = (text) => show(ui.errorMessage, text);

function setConnection(state, text) {
  ui.conn.dataset.state = state;
  ui.conn.textContent = text;
}

function onState(state, detail) {
  if (detail.session) transcript.endSession(detail.session.id);
  // While the last finals are on their way a new recording would orphan them.
  ui.start.disabled = state === "finishing";
  switch (state) {
    case "connecting":
      setConnection(state, detail.attempt ? `Connecting (attempt ${detail.attempt + 1})…` : "Connecting…");
      break;
    case "live":
      setConnection(state, "Live");
      showError("");
      break;
    case "reconnecting": {
      const why = detail.code === 1012 || detail.code === 1001 ? "server restarting" : `connection lost (${detail.code})`;
      setConnection(state, `Reconnecting in ${(detail.delay / 1000).toFixed(1)} s: ${why}`);
      break;
    }
    case "finishing":
      setConnection(state, "Finishing the last sentence…");
      break;
    case "ended":
      setConnection(state, "Not connected");
      if (recording) stopRecording();
      break;
    case "failed":
      setConnection(state, `Stopped: the server refused the stream (${detail.code})`);
      showError(detail.error ? detail.error.message : `The server closed the connection with code ${detail.code}.`);
      if (recording) stopRecording();
      break;
    default:
      setConnection(state, state);
  }
}

function onMessage(msg, session) {
  switch (msg.type) {
    case "ready":
      showSession(msg.session);
      break;
    case "partial":
    case "final":
      ui.empty.hidden = true;
      transcript.apply(msg, session);
      break;
    case "error":
      transcript.apply(msg, session);
      showError(`Server: ${msg.message} (${msg.code})`);
      break;
    case "done":
      ui.session.dataset.state = "ended";
      break;
    default:
      break;
  }
}

function showSession(id) {
  ui.session.hidden = false;
  ui.session.dataset.state = "live";
  ui.sessionId.textContent = id;
  const view = new URL("captions.html", location.href);
  view.searchParams.set("session", id);
  ui.captionLink.href = view.toString();
  view.searchParams.set("bg", "green");
  ui.captionLinkGreen.href = view.toString();
}

/** Shows a stored session's transcript (GET /v1/sessions/{id}/transcript), e.g. after a reload. */
async function reopen(id) {
  showError("");
  let body;
  try {
    const res = await fetchWithToken(`v1/sessions/${encodeURIComponent(id)}/transcript`);
    body = await res.json();
    if (!res.ok) throw new Error(body.error ? body.error.message : `HTTP ${res.status}`);
  } catch (err) {
    showError(`Cannot reopen session ${id}: ${err.message}`);
    return;
  }
  transcript.clear();
  const session = { id, offsetMs: 0 };
  for (const f of body.finals) transcript.apply({ type: "final", ...f }, session);
  ui.empty.hidden = transcript.finalCount > 0;
  showSession(id);
  ui.session.dataset.state = body.session.ended_ms === null ? "live" : "ended";
}

async function start() {
  showError("");
  showMicMessage("");
  ui.start.disabled = true;
  try {
    await capture.start(ui.mic.value);
  } catch (err) {
    showMicMessage(describeMicError(err));
    ui.start.disabled = false;
    return;
  }
  recording = true;
  ui.start.disabled = false;
  ui.start.textContent = "Stop";
  streamer.start(capture.sampleRate);
  refreshMicrophones(capture.deviceLabel);
}

/** Ends the recording: the server then sends the last finals and `done`. */
function stop() {
  if (!recording) return;
  stopRecording();
  streamer.finish();
}

function stopRecording() {
  recording = false;
  ui.start.textContent = "Start";
  capture.stop();
}

/** Fills the picker; device names appear only once the user has allowed the microphone. */
async function refreshMicrophones(activeLabel) {
  const selected = ui.mic.value;
  const mics = await listMicrophones().catch(() => []);
  const options = [new Option("Default microphone", "")];
  for (const { deviceId, label } of mics) {
    if (deviceId === "default" || deviceId === "") continue;
    options.push(new Option(label, deviceId));
  }
  ui.mic.replaceChildren(...options);
  const active = options.find((o) => o.textContent === activeLabel);
  ui.mic.value = selected && options.some((o) => o.value === selected) ? selected : "";
  if (!selected && active && mics.length === 1) ui.mic.value = active.value;
}

function updateActions() {
  const none = transcript.finalCount === 0;
  ui.copy.disabled = none;
  ui.clear.disabled = none;
  for (const button of ui.downloads) button.disabled = none;
}

function download(format) {
  const types = { txt: "text/plain", srt: "application/x-subrip", vtt: "text/vtt" };
  const blob = new Blob([transcript.export(format)], { type: `${types[format]};charset=utf-8` });
  const stamp = new Date().toISOString().slice(0, 19).replace(/[-:]/g, "").replace("T", "-");
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = `transcript-${stamp}.${format}`;
  document.body.append(link);
  link.click();
  link.remove();
  // Revoke later: the download reads the URL after this handler returns.
  setTimeout(() => URL.revokeObjectURL(link.href), 60000);
}

async function copyTranscript() {
  const text = transcript.export("txt");
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // Clipboard API refused (insecure page, no permission): copy through a selection instead.
    const area = document.createElement("textarea");
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  show(ui.copied, "Copied");
  setTimeout(() => show(ui.copied, ""), 2000);
}

function init() {
  const problem = micSupportProblem();
  if (problem) {
    showMicMessage(problem);
    ui.start.disabled = true;
    ui.mic.disabled = true;
    setConnection("unavailable", "Microphone unavailable");
  } else {
    refreshMicrophones();
    navigator.mediaDevices.addEventListener("devicechange", () => refreshMicrophones(capture.deviceLabel));
  }
  ui.start.addEventListener("click", () => (recording ? stop() : start()));
  ui.mic.addEventListener("change", () => {
    if (recording) capture.switchDevice(ui.mic.value).catch((err) => showMicMessage(describeMicError(err)));
  });
  ui.copy.addEventListener("click", copyTranscript);
  ui.clear.addEventListener("click", () => {
    transcript.clear();
    ui.empty.hidden = false;
  });
  for (const button of ui.downloads) button.addEventListener("click", () => download(button.dataset.download));
  ui.reopen.addEventListener("submit", (event) => {
    event.preventDefault();
    const id = ui.reopenId.value.trim();
    if (!id) return;
    const url = new URL(location.href);
    url.searchParams.set("session", id);
    history.replaceState(null, "", url);
    reopen(id);
  });
  const asked = new URLSearchParams(location.search).get("session");
  if (asked) {
    ui.reopenId.value = asked;
    reopen(asked);
  }
  updateActions();
  document.body.dataset.ready = "true";
}

init();
