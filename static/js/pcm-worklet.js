// AudioWorklet processor: runs on the audio rendering thread, so it only converts and batches.
// It downmixes the microphone to mono, converts float samples to 16-bit integers and posts one
// chunk per CHUNK_MS to the page, with the chunk's peak level for the input meter.
// Int16Array uses the platform's byte order, which is little-endian on every platform browsers
// run on, so the posted bytes are s16le as the server expects.

/** Audio per message: small enough for low latency, large enough to keep messages few. */
const CHUNK_MS = 50;
const INT16_MAX = 0x7fff;
const INT16_MIN_ABS = 0x8000;

class PcmCaptureProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    // `sampleRate` is a global of the AudioWorkletGlobalScope: the context's native rate.
    this.chunkSamples = Math.round((sampleRate * CHUNK_MS) / 1000);
    this.startChunk();
  }

  startChunk() {
    this.chunk = new Int16Array(this.chunkSamples);
    this.filled = 0;
    this.peak = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    // No channels means the source is not producing audio (muted or ended track).
    if (channels && channels.length > 0) {
      const frames = channels[0].length;
      for (let i = 0; i < frames; i++) {
        let sample = 0;
        for (let c = 0; c < channels.length; c++) sample += channels[c][i];
        sample = Math.max(-1, Math.min(1, sample / channels.length));
        const magnitude = Math.abs(sample);
        if (magnitude > this.peak) this.peak = magnitude;
        this.chunk[this.filled++] = sample < 0 ? sample * INT16_MIN_ABS : sample * INT16_MAX;
        if (this.filled === this.chunkSamples) this.postChunk();
      }
    }
    // Keep the processor alive for as long as the node exists.
    return true;
  }

  postChunk() {
    const pcm = this.chunk.buffer;
    // Transfer the buffer rather than copy it; a fresh one is started right after.
    this.port.postMessage({ pcm, peak: this.peak }, [pcm]);
    this.startChunk();
  }
}

registerProcessor("pcm-capture", PcmCaptureProcessor);
