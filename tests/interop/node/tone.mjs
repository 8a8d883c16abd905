// What the libwebrtc peers share (call.mjs, leg.mjs): a tone as the microphone, what the remote
// track plays recorded, the dominant frequency and level of what was heard.
import wrtc from "@roamhq/wrtc";

const { RTCAudioSource, RTCAudioSink } = wrtc.nonstandard;

/** A tone in 10 ms frames of 48 kHz mono on a self-correcting clock; returns the track and a stop. */
export function toneMicrophone(freq) {
  const source = new RTCAudioSource();
  const rate = 48000;
  const frame = 480;
  let sent = 0;
  const start = Date.now();
  const timer = setInterval(() => {
    const due = Math.floor(((Date.now() - start) / 1000) * rate / frame);
    while (sent < due) {
      const samples = new Int16Array(frame);
      for (let i = 0; i < frame; i++) {
        samples[i] = Math.round(0.5 * 32767 * Math.sin((2 * Math.PI * freq * (sent * frame + i)) / rate));
      }
      source.onData({ samples, sampleRate: rate, bitsPerSample: 16, channelCount: 1, numberOfFrames: frame });
      sent += 1;
    }
  }, 5);
  return { track: source.createTrack(), stop: () => clearInterval(timer), sent: () => sent };
}

/** Records what a peer connection's remote tracks play. */
export class Speaker {
  constructor(pc) {
    this.heard = [];
    this.rate = 0;
    this.frameSizes = new Set();
    this.sinks = [];
    pc.ontrack = (ev) => {
      const sink = new RTCAudioSink(ev.track);
      sink.ondata = (d) => {
        this.rate = d.sampleRate;
        this.frameSizes.add(d.numberOfFrames);
        const mono = new Int16Array(d.numberOfFrames);
        for (let i = 0; i < d.numberOfFrames; i++) mono[i] = d.samples[i * d.channelCount];
        this.heard.push({ t: Date.now(), mono });
      };
      this.sinks.push(sink);
    };
  }

  /** The dominant frequency (a DFT scan, 100 Hz to 4 kHz) and level of the last `ms` heard. */
  analyse(ms) {
    const tail = this.heard.filter((h) => h.t >= Date.now() - ms);
    const total = tail.reduce((n, h) => n + h.mono.length, 0);
    const pcm = new Float64Array(total);
    let off = 0;
    for (const h of tail) { for (const x of h.mono) pcm[off++] = x / 32768; }
    const rate = this.rate;
    function power(f) {
      let re = 0, im = 0;
      for (let i = 0; i < pcm.length; i++) {
        const a = (2 * Math.PI * f * i) / rate;
        re += pcm[i] * Math.cos(a);
        im -= pcm[i] * Math.sin(a);
      }
      return re * re + im * im;
    }
    let best = 0, bestF = 0;
    for (let f = 100; f <= 4000; f += 5) { const p = power(f); if (p > best) { best = p; bestF = f; } }
    for (let f = bestF - 5; f <= bestF + 5; f += 0.5) { const p = power(f); if (p > best) { best = p; bestF = f; } }
    let sum = 0;
    for (const x of pcm) sum += x * x;
    const levelDb = pcm.length ? 10 * Math.log10(sum / pcm.length) : -Infinity;
    return { heardHz: bestF, levelDb, heardRate: rate, heardSamples: total, frameSizes: [...this.frameSizes] };
  }

  stop() { for (const s of this.sinks) s.stop(); }
}

/** Wait for ICE gathering (3 s at most), then the offer with only loopback candidates: every
 * packet of the tests stays on 127.0.0.1. */
export async function loopbackOffer(pc) {
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    const timer = setTimeout(resolve, 3000);
    pc.onicegatheringstatechange = () => {
      if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
    };
  });
  return pc.localDescription.sdp.split("\r\n")
    .filter((l) => !l.startsWith("a=candidate:") || l.includes(" 127.0.0.1 ")).join("\r\n");
}
