// The demo page's softphone: an agent token, a presence switch, incoming calls with the
// caller's number and payload, answer or decline, hang up, transfer to a group, calls out. Its media is
// the agent's always-connected leg (offered once on connect, lent to each call it takes); a
// call the bridge could not lend it to ("leg": false: the call is on another worker) is
// attached the per-call way, with the API token of the page's first field.
import { BridgeAgent, BridgeClient } from "/web/bridge-client.js";

const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
/** @type {BridgeAgent|null} */
let agent = null;
/** @type {BridgeClient|null} a per-call leg, when the connected one was not lent */
let media = null;
/** @type {string|null} the call this agent is on */
let onCall = null;

function show(text) { $("sp-status").textContent = text; }

function onCallNow(callID) {
  onCall = callID;
  /** @type {HTMLButtonElement} */ ($("sp-hangup")).disabled = !callID;
  /** @type {HTMLButtonElement} */ ($("sp-transfer")).disabled = !callID;
}

function ringRow(ring) {
  const li = document.createElement("li");
  li.id = `sp-ring-${ring.callID}`;
  li.textContent = `${ring.from} on ${ring.number} ${JSON.stringify(ring.payload || {})} `;
  const answer = Object.assign(document.createElement("button"), { textContent: "Answer", className: "primary" });
  const decline = Object.assign(document.createElement("button"), { textContent: "Decline" });
  answer.onclick = () => agent?.accept(ring.callID);
  decline.onclick = () => agent?.decline(ring.callID);
  li.append(answer, " ", decline);
  $("sp-rings").append(li);
}

function dropRing(callID) { document.getElementById(`sp-ring-${callID}`)?.remove(); }

async function callOver(callID) {
  dropRing(callID);
  if (onCall !== callID) return;
  await media?.close();
  media = null;
  onCallNow(null);
  show("open");
}

$("sp-connect").onclick = async () => {
  agent?.close();
  agent = new BridgeAgent({
    token: /** @type {HTMLInputElement} */ ($("sp-token")).value.trim(),
    leg: true,
    audio: /** @type {HTMLAudioElement} */ ($("sp-audio")),
  });
  agent.addEventListener("connection", (e) => show(e.detail.state));
  agent.addEventListener("leg", (e) => { $("sp-leg").textContent = e.detail.state; });
  agent.addEventListener("presence", (e) => { /** @type {HTMLSelectElement} */ ($("sp-presence")).value = e.detail.state; });
  agent.addEventListener("ringing", (e) => ringRow(e.detail));
  for (const type of ["call.taken", "ringing.stopped"]) {
    agent.addEventListener(type, (e) => dropRing(e.detail.callID));
  }
  agent.addEventListener("accepted", async (e) => {
    dropRing(e.detail.callID);
    show(`on call ${e.detail.callID}`);
    onCallNow(e.detail.callID);
    if (e.detail.leg) return;  // the connected leg carries it
    media = new BridgeClient({ token: /** @type {HTMLInputElement} */ ($("token")).value });
    await media.connect(e.detail.callID);
  });
  agent.addEventListener("transferred", (e) => callOver(e.detail.callID));
  agent.addEventListener("transfer.failed", (e) => show(`on call ${e.detail.callID} (nobody took it)`));
  agent.addEventListener("error", (e) => show(`${e.detail.code}: ${e.detail.message}`));
  agent.addEventListener("call.ended", (e) => callOver(e.detail.callID));
  try {
    const hello = await agent.connect();
    show(`open as ${hello.agentID} (${hello.groups.join(", ") || "no group"})`);
  } catch (err) {
    show(`refused: ${err.message}`);
  }
};

$("sp-presence").onchange = (e) => agent?.setPresence(/** @type {any} */ (e.target).value);
$("sp-hangup").onclick = () => { if (onCall) agent?.hangup(onCall); };
$("sp-call").onclick = async () => {
  const phone = /** @type {HTMLInputElement} */ ($("sp-dial")).value.trim();
  if (!agent || !phone || onCall) return;
  try {
    const call = await agent.call(phone);
    onCallNow(call.callID);
    show(`calling ${phone} (${call.callID})`);
  } catch (err) {
    show(`${err.code}: ${err.message}`);
  }
};
$("sp-transfer").onclick = () => {
  const group = /** @type {HTMLInputElement} */ ($("sp-group")).value.trim();
  if (onCall && group) agent?.transfer(onCall, group);
};

// For the console (and the tests): the softphone's agent and the call it is on.
Object.assign(window, { softphone: { get agent() { return agent; }, get callID() { return onCall; } } });
