// A libwebrtc peer (@roamhq/wrtc: Google's libwebrtc, the engine of the Android and iOS WebRTC
// SDKs) placing a call through the bridge: sends a tone from RTCAudioSource, records what
// RTCAudioSink plays, prints a JSON summary. Usage: node call.mjs BASE_URL FREQ SECONDS
import wrtc from "@roamhq/wrtc";

const { RTCPeerConnection, nonstandard } = wrtc;
const { RTCAudioSource, RTCAudioSink } = nonstandard;
const [base, freqArg, secondsArg] = process.argv.slice(2);
const freq = Number(freqArg);
const seconds = Number(secondsArg);

async function api(path, body) {
  const resp = await fetch(base + path, {
    method: body ? "POST" : "GET",
    headers: body ? { "Content-Type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await resp.json();
  if (!resp.ok) throw new Error(`${path}: ${resp.status} ${JSON.stringify(data)}`);
  return data;
}

const call = await api("/call/make", { phone: "+5521999999999" });
const config = await api("/call/webrtc/config");
const pc = new RTCPeerConnection({ iceServers: config.iceServers, iceTransportPolicy: config.iceTransportPolicy });

// Microphone: a tone in 10 ms frames of 48 kHz mono, on a self-correcting clock.
const source = new RTCAudioSource();
pc.addTrack(source.createTrack());
const rate = 48000;
const frame = 480;
let sent = 0;
const start = Date.now();
const mic = setInterval(() => {
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

// Speaker: whatever the remote track plays.
const heard = [];
let heardRate = 0;
const frameSizes = new Set();
pc.ontrack = (ev) => {
  const sink = new RTCAudioSink(ev.track);
  sink.ondata = (d) => {
    heardRate = d.sampleRate;
    frameSizes.add(d.numberOfFrames);
    const mono = new Int16Array(d.numberOfFrames);
    for (let i = 0; i < d.numberOfFrames; i++) mono[i] = d.samples[i * d.channelCount];
    heard.push({ t: Date.now(), mono });
  };
  pc.sinks = [...(pc.sinks || []), sink];
};

await pc.setLocalDescription(await pc.createOffer());
await new Promise((resolve) => {
  if (pc.iceGatheringState === "complete") return resolve();
  const timer = setTimeout(resolve, 3000);
  pc.onicegatheringstatechange = () => {
    if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
  };
});
// Offer only loopback candidates: every packet of the test stays on 127.0.0.1.
const sdp = pc.localDescription.sdp.split("\r\n")
  .filter((l) => !l.startsWith("a=candidate:") || l.includes(" 127.0.0.1 ")).join("\r\n");
const answer = await api("/call/webrtc/offer", { callID: call.callID, type: "offer", sdp });
await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });

await new Promise((r) => setTimeout(r, seconds * 1000));
const connectionState = pc.connectionState;
const settledFrom = Date.now() - 1500;
const tail = heard.filter((h) => h.t >= settledFrom);
const total = tail.reduce((n, h) => n + h.mono.length, 0);
const pcm = new Float64Array(total);
let off = 0;
for (const h of tail) { for (const x of h.mono) pcm[off++] = x / 32768; }

// Dominant frequency by a scan of the DFT magnitude from 100 Hz to 4 kHz in 1 Hz steps.
function power(f) {
  let re = 0, im = 0;
  for (let i = 0; i < pcm.length; i++) {
    const a = (2 * Math.PI * f * i) / heardRate;
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

clearInterval(mic);
for (const s of pc.sinks || []) s.stop();
await api("/call/hangup", { callID: call.callID });
pc.close();
console.log(JSON.stringify({
  callID: call.callID, connectionState, heardHz: bestF, levelDb, heardRate,
  heardSamples: total, frameSizes: [...frameSizes], framesSent: sent,
}));
process.exit(0);
