// A libwebrtc peer (@roamhq/wrtc: Google's libwebrtc, the engine of the Android and iOS WebRTC
// SDKs) placing a call through the bridge: sends a tone from RTCAudioSource, records what
// RTCAudioSink plays, prints a JSON summary. Usage: node call.mjs BASE_URL FREQ SECONDS
import wrtc from "@roamhq/wrtc";

import { Speaker, loopbackOffer, toneMicrophone } from "./tone.mjs";

const { RTCPeerConnection } = wrtc;
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
const mic = toneMicrophone(freq);
pc.addTrack(mic.track);
const speaker = new Speaker(pc);

const sdp = await loopbackOffer(pc);
const answer = await api("/call/webrtc/offer", { callID: call.callID, type: "offer", sdp });
await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });

await new Promise((r) => setTimeout(r, seconds * 1000));
const connectionState = pc.connectionState;
const heard = speaker.analyse(1500);
mic.stop();
speaker.stop();
await api("/call/hangup", { callID: call.callID });
pc.close();
console.log(JSON.stringify({ callID: call.callID, connectionState, ...heard, framesSent: mic.sent() }));
process.exit(0);
