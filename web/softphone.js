// The demo page's softphone: an agent token, a presence switch, incoming calls with the
// caller's number and payload, answer or decline; the call's audio through BridgeClient.
import { BridgeAgent, BridgeClient } from "/web/bridge-client.js";

const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
/** @type {BridgeAgent|null} */
let agent = null;
/** @type {BridgeClient|null} */
let media = null;

function show(text) { $("sp-status").textContent = text; }

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

$("sp-connect").onclick = async () => {
  agent?.close();
  agent = new BridgeAgent({ token: /** @type {HTMLInputElement} */ ($("sp-token")).value.trim() });
  agent.addEventListener("connection", (e) => show(e.detail.state));
  agent.addEventListener("presence", (e) => { /** @type {HTMLSelectElement} */ ($("sp-presence")).value = e.detail.state; });
  agent.addEventListener("ringing", (e) => ringRow(e.detail));
  for (const type of ["call.taken", "ringing.stopped"]) {
    agent.addEventListener(type, (e) => dropRing(e.detail.callID));
  }
  agent.addEventListener("accepted", async (e) => {
    dropRing(e.detail.callID);
    show(`on call ${e.detail.callID}`);
    media = new BridgeClient({ token: /** @type {HTMLInputElement} */ ($("token")).value });
    await media.connect(e.detail.callID);
    /** @type {HTMLButtonElement} */ ($("sp-hangup")).disabled = false;
  });
  agent.addEventListener("call.ended", async (e) => {
    dropRing(e.detail.callID);
    await media?.close();
    media = null;
    /** @type {HTMLButtonElement} */ ($("sp-hangup")).disabled = true;
    show("open");
  });
  try {
    const hello = await agent.connect();
    show(`open as ${hello.agentID} (${hello.groups.join(", ") || "no group"})`);
  } catch (err) {
    show(`refused: ${err.message}`);
  }
};

$("sp-presence").onchange = (e) => agent?.setPresence(/** @type {any} */ (e.target).value);
$("sp-hangup").onclick = async () => { if (media?.callID) await media.hangup(media.callID); };
