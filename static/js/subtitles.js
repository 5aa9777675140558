// Transcript exports: plain text, SubRip (.srt) and WebVTT (.vtt). Pure functions over cues of
// the form { startMs, endMs, text }, times in milliseconds from the start of the recording.

const MS_PER_SECOND = 1000;
const MS_PER_MINUTE = 60 * MS_PER_SECOND;
const MS_PER_HOUR = 60 * MS_PER_MINUTE;

const pad = (n, width) => String(n).padStart(width, "0");

/** `HH:MM:SS,mmm` (SubRip) or, with separator ".", `HH:MM:SS.mmm` (WebVTT). */
export function formatTimestamp(ms, separator = ",") {
  const total = Math.max(0, Math.round(ms));
  const hours = Math.floor(total / MS_PER_HOUR);
  const minutes = Math.floor((total % MS_PER_HOUR) / MS_PER_MINUTE);
  const seconds = Math.floor((total % MS_PER_MINUTE) / MS_PER_SECOND);
  const millis = total % MS_PER_SECOND;
  return `${pad(hours, 2)}:${pad(minutes, 2)}:${pad(seconds, 2)}${separator}${pad(millis, 3)}`;
}

/** Cue text on one line: a blank line would end the cue early in both formats. */
function cueText(text) {
  return text.replace(/\s+/g, " ").trim();
}

/** Only cues with text; a cue never ends before it starts. */
function usable(cues) {
  return cues
    .filter((cue) => cueText(cue.text) !== "")
    .map((cue) => ({ ...cue, endMs: Math.max(cue.endMs, cue.startMs) }));
}

export function toText(cues) {
  const lines = usable(cues).map((cue) => cueText(cue.text));
  return lines.length ? lines.join("\n") + "\n" : "";
}

export function toSrt(cues) {
  return usable(cues)
    .map(
      (cue, i) =>
        `${i + 1}\n${formatTimestamp(cue.startMs)} --> ${formatTimestamp(cue.endMs)}\n${cueText(cue.text)}\n`,
    )
    .join("\n");
}

export function toVtt(cues) {
  // WebVTT cue text is HTML-like: escape markup characters, and "-->" may not appear in it.
  const escape = (text) =>
    cueText(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  const body = usable(cues)
    .map(
      (cue) =>
        `${formatTimestamp(cue.startMs, ".")} --> ${formatTimestamp(cue.endMs, ".")}\n${escape(cue.text)}\n`,
    )
    .join("\n");
  return `WEBVTT\n\n${body}`;
}

/** `[mm:ss]` label for the transcript view, hours only when needed. */
export function formatClock(ms) {
  const total = Math.max(0, Math.floor(ms / MS_PER_SECOND));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = total % 60;
  return hours ? `${hours}:${pad(minutes, 2)}:${pad(seconds, 2)}` : `${pad(minutes, 2)}:${pad(seconds, 2)}`;
}
