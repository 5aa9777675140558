// Microphone capture: getUserMedia into an AudioWorklet that posts s16le chunks at the
// AudioContext's native rate (the server resamples). Also lists microphones and turns the
// ways capture can fail into plain sentences for the page.

const WORKLET_URL = new URL("./pcm-worklet.js", import.meta.url);

/** Raw audio is what speech recognition wants; browser voice processing can clip words. */
const AUDIO_CONSTRAINTS = {
  channelCount: 1,
  echoCancellation: false,
  noiseSuppression: false,
  autoGainControl: false,
};

/** Level meter range: peaks below this many dB under full scale show as empty. */
const METER_FLOOR_DB = 60;

/** Why capture cannot even be tried on this page, or null when it can. */
export function micSupportProblem() {
  if (!window.isSecureContext) {
    return (
      `The microphone is not available: browsers allow it only on HTTPS pages or on ` +
      `localhost, and this page was loaded from ${location.origin}. Open it over HTTPS ` +
      `(behind a TLS proxy) or as http://localhost on the server's own computer.`
    );
  }
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    return "The microphone is not available: this browser does not support microphone capture (getUserMedia).";
  }
  if (!window.AudioWorkletNode) {
    return "The microphone is not available: this browser does not support AudioWorklet. Use a current Chromium or Firefox.";
  }
  return null;
}

/** A sentence for a getUserMedia or AudioContext failure. */
export function describeMicError(err) {
  switch (err && err.name) {
    case "NotAllowedError":
    case "SecurityError":
    case "PermissionDeniedError":
      return (
        "The microphone is not available: permission was denied. Allow microphone access for this " +
        "site (the icon in the address bar), then press Start again."
      );
    case "NotFoundError":
    case "DevicesNotFoundError":
    case "OverconstrainedError":
      return "The microphone is not available: no microphone was found. Connect one, then press Start again.";
    case "NotReadableError":
    case "TrackStartError":
    case "AbortError":
      return "The microphone is not available: another application is using it, or the system could not open it.";
    default:
      return `The microphone could not be started: ${err && err.message ? err.message : err}`;
  }
}

/** Audio inputs as { deviceId, label }; labels are empty until permission is granted. */
export async function listMicrophones() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return [];
  const devices = await navigator.mediaDevices.enumerateDevices();
  return devices
    .filter((d) => d.kind === "audioinput")
    .map((d, i) => ({ deviceId: d.deviceId, label: d.label || `Microphone ${i + 1}` }));
}

/** Peak amplitude in [0, 1] to a meter value in [0, 1] on a dB scale. */
export function peakToMeter(peak) {
  if (peak <= 0) return 0;
  const db = 20 * Math.log10(peak);
  return Math.max(0, Math.min(1, (db + METER_FLOOR_DB) / METER_FLOOR_DB));
}

export class MicCapture {
  /**
   * @param {object} handlers
   * @param {(pcm: ArrayBuffer, firstSample: number) => void} handlers.onChunk s16le mono audio
   *   and the index of its first sample since start (for timing across reconnects)
   * @param {(meter: number) => void} handlers.onLevel input level in [0, 1]
   * @param {() => void} handlers.onEnded the device went away (unplugged, revoked)
   */
  constructor({ onChunk, onLevel, onEnded }) {
    this.onChunk = onChunk;
    this.onLevel = onLevel;
    this.onEnded = onEnded;
    this.context = null;
    this.stream = null;
    this.source = null;
    this.node = null;
    this.samples = 0;
  }

  get sampleRate() {
    return this.context ? this.context.sampleRate : null;
  }

  get deviceLabel() {
    const track = this.stream && this.stream.getAudioTracks()[0];
    return track ? track.label : "";
  }

  /** Must be called from a user gesture (a click), or the AudioContext starts suspended. */
  async start(deviceId) {
    // Created before the first await, while the click still counts as user activation.
    this.context = new AudioContext();
    this.samples = 0;
    try {
      await this.context.audioWorklet.addModule(WORKLET_URL);
      this.node = new AudioWorkletNode(this.context, "pcm-capture", {
        numberOfInputs: 1,
        numberOfOutputs: 1,
        channelCount: 1,
        channelCountMode: "explicit",
        channelInterpretation: "speakers",
      });
      this.node.port.onmessage = ({ data }) => {
        const first = this.samples;
        this.samples += data.pcm.byteLength / Int16Array.BYTES_PER_ELEMENT;
        this.onChunk(data.pcm, first);
        this.onLevel(peakToMeter(data.peak));
      };
      // The node writes silence; connecting it to the destination keeps the graph pulling it.
      this.node.connect(this.context.destination);
      await this.openDevice(deviceId);
      await this.context.resume();
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  /** Swaps the input device without touching the AudioContext, so the stream goes on. */
  async switchDevice(deviceId) {
    if (!this.context) return;
    this.closeDevice();
    await this.openDevice(deviceId);
  }

  async openDevice(deviceId) {
    const audio = { ...AUDIO_CONSTRAINTS };
    if (deviceId) audio.deviceId = { exact: deviceId };
    this.stream = await navigator.mediaDevices.getUserMedia({ audio, video: false });
    const track = this.stream.getAudioTracks()[0];
    track.addEventListener("ended", () => this.onEnded());
    this.source = this.context.createMediaStreamSource(this.stream);
    this.source.connect(this.node);
  }

  closeDevice() {
    if (this.source) this.source.disconnect();
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
    this.source = null;
    this.stream = null;
  }

  async stop() {
    this.closeDevice();
    if (this.node) {
      this.node.port.onmessage = null;
      this.node.disconnect();
    }
    this.node = null;
    const context = this.context;
    this.context = null;
    if (context && context.state !== "closed") await context.close();
    this.onLevel(0);
  }
}
