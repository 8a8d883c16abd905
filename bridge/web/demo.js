// The demo page: dial, ring, answer or decline, mute, hang up, levels and quality stats.
import { BridgeClient } from "./bridge-client.js";

const $ = (/** @type {string} */ id) => /** @type {any} */ (document.getElementById(id));
const tokenInput = $("token");
tokenInput.value = new URLSearchParams(location.search).get("token") || localStorage.getItem("bridgeToken") || "";

/** @type {BridgeClient} */
let client = newClient();
/** @type {Map<string, any>} ringing inbound calls */
const ringing = new Map();
let callEnded = false;

function newClient() {
  const c = new BridgeClient({ token: tokenInput.value, audioElement: $("remote"), statsIntervalMs: 1000 });
  c.addEventListener("state", (/** @type {any} */ e) => {
    if (!callEnded) setState(`webrtc ${e.detail.state}`);
  });
  c.addEventListener("stats", (/** @type {any} */ e) => showStats(e.detail));
  c.addEventListener("call", (/** @type {any} */ e) => onCallEvent(e.detail));
  c.addEventListener("error", (/** @type {any} */ e) => showError(e.detail));
  c.subscribeEvents();
  return c;
}

tokenInput.addEventListener("change", () => {
  localStorage.setItem("bridgeToken", tokenInput.value);
  client._events?.close();
  client = newClient();
});

function setState(/** @type {string} */ text) {
  $("state").textContent = text;
}

function showError(/** @type {any} */ err) {
  $("error").textContent = err ? `${err.code ? err.code + ": " : ""}${err.message || err}` : "";
}

function inCall(/** @type {boolean} */ on) {
  $("call").disabled = on;
  $("mute").disabled = !on;
  $("hangup").disabled = !on;
  if (!on) {
    $("mute").textContent = "Mute";
    $("callid").textContent = "";
  }
}

async function join(/** @type {string} */ callID) {
  callEnded = false;
  $("callid").textContent = callID;
  inCall(true);
  await client.connect(callID);
  refreshMics();
}

$("call").addEventListener("click", async () => {
  showError(null);
  try {
    const call = await client.makeCall($("phone").value.trim());
    setState(call.state);
    await join(call.callID);
  } catch (err) {
    showError(err);
    inCall(false);
  }
});

$("mute").addEventListener("click", async () => {
  try {
    await client.mute(!client.muted);
    $("mute").textContent = client.muted ? "Unmute" : "Mute";
  } catch (err) {
    showError(err);
  }
});

$("hangup").addEventListener("click", async () => {
  try {
    callEnded = true;
    const snap = await client.hangup();
    setState(`ended (${snap?.endReason})`);
  } catch (err) {
    showError(err);
  }
  inCall(false);
});

$("mics").addEventListener("change", () => client.setMicrophone($("mics").value).catch(showError));

async function refreshMics() {
  const mics = await client.listMicrophones().catch(() => []);
  $("mics").replaceChildren(...mics.map((m, i) => new Option(m.label || `microphone ${i + 1}`, m.deviceId)));
}

function onCallEvent(/** @type {any} */ ev) {
  const call = ev.call;
  if (call.callID === client.callID) {
    setState(call.state + (call.webrtc ? ` · webrtc ${call.webrtc.state}` : ""));
    if (call.state === "ended") {
      callEnded = true;
      setState(`ended (${call.endReason})`);
      client.close();
      inCall(false);
    }
  }
  if (call.direction === "inbound" && call.state === "ringing") ringing.set(call.callID, call);
  else ringing.delete(call.callID);
  renderRinging();
}

function renderRinging() {
  const items = [...ringing.values()].map((call) => {
    const li = document.createElement("li");
    li.dataset.callid = call.callID;
    li.append(`${call.peer} is calling `);
    const answer = Object.assign(document.createElement("button"), { textContent: "Answer", className: "primary answer" });
    const decline = Object.assign(document.createElement("button"), { textContent: "Decline", className: "danger decline" });
    answer.onclick = async () => {
      try {
        await join(call.callID);
        await client.answer(call.callID);
      } catch (err) {
        showError(err);
      }
    };
    decline.onclick = () => client.hangup(call.callID).catch(showError);
    li.append(answer, " ", decline);
    return li;
  });
  $("calls").replaceChildren(...items);
}

function showStats(/** @type {any} */ s) {
  const rows = [
    ["round trip", s.rttMs == null ? "–" : `${s.rttMs.toFixed(0)} ms`],
    ["jitter", s.jitterMs == null ? "–" : `${s.jitterMs.toFixed(1)} ms`],
    ["packets lost", `${s.packetsLost}${s.lossPercent == null ? "" : ` (${s.lossPercent.toFixed(1)} % now)`}`],
    ["concealed", s.totalSamplesReceived ? `${((100 * s.concealedSamples) / s.totalSamplesReceived).toFixed(2)} %` : "–"],
  ];
  $("stats").replaceChildren(...rows.map(([k, v]) => {
    const tr = document.createElement("tr");
    tr.innerHTML = `<td>${k}</td><td>${v}</td>`;
    return tr;
  }));
}

function meter(/** @type {string} */ id, /** @type {number} */ db) {
  const pct = Number.isFinite(db) ? Math.max(0, Math.min(100, ((db + 60) / 60) * 100)) : 0;
  $(id).style.width = `${pct}%`;
}

setInterval(() => {
  meter("in-level", client.inputLevel());
  meter("out-level", client.outputLevel());
}, 100);

// The simulated engine can ring us on demand.
fetch("/readyz").then((r) => r.json()).then((r) => {
  if (r.engine?.name === "sim") $("sim-row").hidden = false;
});
$("sim-ring").addEventListener("click", () =>
  client.api("/call/sim/incoming", { phone: "+15550001111" }).catch(showError));

// Expose for debugging and for the end-to-end tests.
Object.assign(window, { demo: { get client() { return client; } } });
