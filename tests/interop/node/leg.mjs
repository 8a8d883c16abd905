// A libwebrtc agent (@roamhq/wrtc) on the desk's always-connected leg (issue 49): it opens the
// agent socket, offers its leg once, accepts the first call that rings it (no new offer: the
// call comes on the leg), restarts ICE on the same connection once the call is on it (the leg
// re-established as after a loss: the bridge answers from a fresh peer), and when a line on
// stdin says the new leg is on the call, listens for SECONDS, hangs up on the socket and prints
// what it heard. Every socket message and the result are JSON lines on stdout.
// Usage: node --experimental-websocket leg.mjs BASE_URL AGENT_TOKEN FREQ SECONDS
import wrtc from "@roamhq/wrtc";

import { Speaker, loopbackOffer, toneMicrophone } from "./tone.mjs";

const { RTCPeerConnection } = wrtc;
const [base, token, freqArg, secondsArg] = process.argv.slice(2);
const say = (m) => process.stdout.write(JSON.stringify(m) + "\n");

const pc = new RTCPeerConnection();
const mic = toneMicrophone(Number(freqArg));
pc.addTrack(mic.track);
const speaker = new Speaker(pc);
pc.onconnectionstatechange = () => say({ type: "leg", state: pc.connectionState });

const url = new URL("/agents/connect", base);
url.protocol = "ws:";
url.searchParams.set("token", token);
const ws = new WebSocket(url);
const send = (m) => ws.send(JSON.stringify(m));
let offers = 0;
const go = new Promise((resolve) => process.stdin.once("data", resolve));

ws.onmessage = async (e) => {
  const msg = JSON.parse(e.data);
  say(msg);
  if (msg.type === "hello") {
    offers += 1;
    send({ type: "offer", sdp: await loopbackOffer(pc) });
  } else if (msg.type === "answer") {
    await pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
  } else if (msg.type === "ringing") {
    send({ type: "accept", callID: msg.callID });
  } else if (msg.type === "accepted") {
    await new Promise((r) => setTimeout(r, 300));
    pc.restartIce();
    offers += 1;
    send({ type: "offer", sdp: await loopbackOffer(pc) });
    await go;
    await new Promise((r) => setTimeout(r, Number(secondsArg) * 1000));
    say({ type: "result", callID: msg.callID, offers, connectionState: pc.connectionState, ...speaker.analyse(1000) });
    send({ type: "hangup", callID: msg.callID });
  } else if (msg.type === "call.ended") {
    mic.stop();
    speaker.stop();
    pc.close();
    ws.close();
    process.exit(0);
  }
};
ws.onclose = () => process.exit(1);
