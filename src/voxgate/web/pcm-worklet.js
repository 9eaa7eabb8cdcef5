// AudioWorklet: mono microphone samples → 100 ms frames of 16 kHz little-endian pcm16, plus the frame's RMS.
class PcmFrames extends AudioWorkletProcessor {
  constructor() {
    super();
    this.ratio = sampleRate / 16000;
    this.frame = new Int16Array(1600);
    this.filled = 0;
    this.position = 0; // fractional read position for resampling
    this.sumSquares = 0;
    this.last = 0; // last sample of the previous block, for interpolation across blocks
  }

  push(value) {
    const clamped = Math.max(-1, Math.min(1, value));
    this.sumSquares += clamped * clamped;
    this.frame[this.filled++] = clamped < 0 ? clamped * 0x8000 : clamped * 0x7fff;
    if (this.filled === this.frame.length) {
      const rms = Math.sqrt(this.sumSquares / this.frame.length);
      this.port.postMessage({ pcm: this.frame.buffer, rms }, [this.frame.buffer]);
      this.frame = new Int16Array(1600);
      this.filled = 0;
      this.sumSquares = 0;
    }
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    if (this.ratio === 1) {
      for (let i = 0; i < channel.length; i++) this.push(channel[i]);
      return true;
    }
    // Linear interpolation down (or up) to 16 kHz when the context runs at another rate.
    while (this.position < channel.length - 1) {
      const i = Math.floor(this.position);
      const t = this.position - i;
      const a = i < 0 ? this.last : channel[i];
      this.push(a * (1 - t) + channel[i + 1] * t);
      this.position += this.ratio;
    }
    this.position -= channel.length;
    this.last = channel[channel.length - 1];
    return true;
  }
}

registerProcessor("pcm-frames", PcmFrames);
