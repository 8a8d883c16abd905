// The demo page: dial, ring, answer or decline, mute, hang up, levels and quality stats.
// Contact centres: open it twice; the second tab joins a call in progress as a supervisor
// (listen, whisper, barge, take over), and either tab can hold, transfer and send DTMF.
import { BridgeClient } from "./bridge-client.js";

const $ = (/** @type {string} */ id) => /** @type {any} */ (document.getElementById(id));
const tokenInput = $("token");
tokenInput.value = new URLSearchParams(location.search).get("token") || localStorage.getItem("bridgeToken") || "";

/** @type {BridgeClient} */
let client = newClient();
/** @type {Map<string, any>} ringing inbound calls */
const ringing = new Map();
/** @type {Map<string, any>} active calls this tab could supervise */
const live = new Map();
const pidInput = $("pid");
pidInput.value = new URLSearchParams(location.search).get("pid") || sessionStorage.getItem("bridgePid") || "";
pidInput.placeholder = "agent";
let callEnded = false;
/** the call's state as the bridge last told it ("calling", "active", …) */
let callState = "";

function newClient() {
  const c = new BridgeClient({ token: tokenInput.value, audioElement: $("remote"), statsIntervalMs: 1000 });
  c.addEventListener("state", (/** @type {any} */ e) => {
    if (!callEnded) setState(`${callState ? callState + " · " : ""}webrtc ${e.detail.state}`);
  });
  c.addEventListener("stats", (/** @type {any} */ e) => showStats(e.detail));
  c.addEventListener("call", (/** @type {any} */ e) => onCallEvent(e.detail));
  c.addEventListener("error", (/** @type {any} */ e) => showError(e.detail));
  c.addEventListener("role", () => showRole());
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
  $("leave").disabled = !on;
  $("hold").disabled = !on;
  $("transfer").disabled = !on;
  pidInput.disabled = on;
  for (const b of document.querySelectorAll("#roles button[data-role], #keypad button")) {
    /** @type {HTMLButtonElement} */ (b).disabled = !on;
  }
  if (!on) {
    $("mute").textContent = "Mute";
    $("callid").textContent = "";
    $("participants").replaceChildren();
    $("role").textContent = "–";
  }
  renderLive();
}

/**
 * Join a call's audio as `role` (the agent by default; a supervisor from "Calls in progress").
 * @param {string} callID
 * @param {"agent"|"listen"|"whisper"|"barge"} [role]
 */
async function join(callID, role = "agent") {
  callEnded = false;
  callState = "";
  let pid = pidInput.value.trim();
  if (!pid && role !== "agent") pid = pidInput.value = `sup-${Math.random().toString(36).slice(2, 6)}`;
  if (pid) sessionStorage.setItem("bridgePid", pid);
  $("callid").textContent = callID;
  $("dtmf-log").textContent = "";
  $("dtmf-sent").textContent = "";
  inCall(true);
  await client.connect(callID, { participantID: pid, role });
  showRole();
  refreshMics();
  refreshAssets();
  client.getCall(callID).then(showCall).catch(() => {});
}

function showRole() {
  $("role").textContent = client.callID ? client.role : "–";
  for (const b of document.querySelectorAll("#roles button[data-role]")) {
    b.setAttribute("aria-pressed", String(/** @type {HTMLElement} */ (b).dataset.role === client.role));
  }
}

/** The participants list and the hold state, from a snapshot of our call. */
function showCall(/** @type {any} */ call) {
  if (!call || call.callID !== client.callID) return;
  const items = (call.participants || []).map((/** @type {any} */ p) => {
    const li = document.createElement("li");
    li.dataset.pid = p.participantID;
    li.dataset.role = p.role;
    li.className = p.participantID === client.id ? "me" : "";
    li.textContent = `${p.participantID} · ${p.role} · ${p.webrtc?.state || "–"}${p.participantID === client.id ? " (you)" : ""}`;
    return li;
  });
  $("participants").replaceChildren(...items);
  $("held").textContent = call.held ? "yes" : "no";
  $("hold").textContent = call.held ? "Resume" : "Hold";
  $("hold").dataset.held = String(Boolean(call.held));
  // Who is talking (with BRIDGE_SPEECH_EVENTS on; the snapshot has no `speaking` otherwise).
  const talking = call.speaking ? ["whatsapp", "agent"].filter((side) => call.speaking[side]) : [];
  $("speaking").textContent = !call.speaking ? "–" : talking.length ? talking.join(" + ") : "nobody";
}

async function refreshAssets() {
  const { assets } = await client.listAudioAssets().catch(() => ({ assets: [] }));
  const keep = $("music").value;
  $("music").replaceChildren(new Option("(silence)", ""),
    ...assets.map((/** @type {any} */ a) => new Option(a.name || a.assetId, a.assetId)));
  $("music").value = keep;
}

for (const b of document.querySelectorAll("#roles button[data-role]")) {
  b.addEventListener("click", async () => {
    showError(null);
    try {
      showCall(await client.setRole(/** @type {any} */ (/** @type {HTMLElement} */ (b).dataset.role)));
      showRole();
    } catch (err) {
      showError(err);
    }
  });
}

$("transfer").addEventListener("click", async () => {
  showError(null);
  try {
    showCall(await client.transfer($("transfer-to").value.trim()));
  } catch (err) {
    showError(err);
  }
});

$("hold").addEventListener("click", async () => {
  showError(null);
  try {
    const held = $("hold").dataset.held !== "true";
    showCall(await client.hold(held, $("music").value || undefined));
  } catch (err) {
    showError(err);
  }
});

for (const b of document.querySelectorAll("#keypad button[data-digit]")) {
  b.addEventListener("click", () => {
    showError(null);
    client.sendDtmf(/** @type {string} */ (/** @type {HTMLElement} */ (b).dataset.digit)).catch(showError);
  });
}

$("leave").addEventListener("click", async () => {
  callEnded = true;
  await client.close();
  setState("left the call");
  inCall(false);
});

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
  if (call.callID === client.callID && !callEnded) {
    const me = (call.participants || []).find((/** @type {any} */ p) => p.participantID === client.id);
    const webrtc = me ? me.webrtc : call.webrtc;
    callState = call.state;
    setState(call.state + (webrtc ? ` · webrtc ${webrtc.state}` : ""));
    showCall(call);
    if (ev.type === "call.dtmf") $("dtmf-log").textContent += ev.digit;
    if (ev.type === "call.dtmf.sent") $("dtmf-sent").textContent += ev.digits;
    if (ev.type === "participant.left" && ev.participantID === client.id) {
      callEnded = true;
      setState(`left the call (${ev.type})`);
      inCall(false);
    }
    if (call.state === "ended") {
      callEnded = true;
      setState(`ended (${call.endReason})`);
      client.close();
      inCall(false);
    }
  }
  if (call.direction === "inbound" && call.state === "ringing") ringing.set(call.callID, call);
  else ringing.delete(call.callID);
  if (call.state === "active") live.set(call.callID, call);
  else live.delete(call.callID);
  renderRinging();
  renderLive();
}

/** Active calls this tab is not on, each with a "Supervise" button. */
function renderLive() {
  const busy = Boolean(client.callID) && !callEnded; // one call per tab: leave before supervising
  const items = [...live.values()].filter(() => !busy).map((call) => {
    const li = document.createElement("li");
    li.dataset.callid = call.callID;
    const agents = (call.participants || []).filter((/** @type {any} */ p) => p.role === "agent");
    li.append(`${call.peer} · ${agents.map((/** @type {any} */ p) => p.participantID).join(", ") || "no agent"} `);
    const sup = Object.assign(document.createElement("button"), { textContent: "Supervise", className: "supervise" });
    sup.onclick = async () => {
      showError(null);
      try {
        await join(call.callID, $("join-role").value);
      } catch (err) {
        showError(err);
        inCall(false);
      }
    };
    li.append(sup);
    return li;
  });
  $("live").replaceChildren(...items);
}

// Calls already in progress when the page opens.
client.listCalls().then(({ calls }) => {
  for (const call of calls) if (call.state === "active") live.set(call.callID, call);
  renderLive();
}).catch(() => {});

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
