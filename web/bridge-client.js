// bridge-client.js — talk on a WhatsApp call from a browser through the WebRTC bridge.
// An ES module with no dependencies and no build step. Copy it, import it:
//
//   import { BridgeClient } from "./bridge-client.js";
//   const client = new BridgeClient({ baseUrl: "https://bridge.example", token: "…" });
//   const call = await client.makeCall("+5521999999999");
//   await client.connect(call.callID);      // mic → WhatsApp, WhatsApp → <audio>
//   client.addEventListener("stats", (e) => console.log(e.detail));
//   await client.mute(true);
//   await client.hangup();
//
// Contact centres: a second browser joins the same call as a supervisor and changes role live.
//
//   const sup = new BridgeClient({ participantID: "sup-1", role: "listen" });
//   await sup.connect(callID);              // hears the agent and WhatsApp, says nothing
//   await sup.setRole("barge");             // now both sides hear the supervisor
//   await sup.hold(true, assetId);          // WhatsApp hears the music; agent ⇄ supervisor talk
//   await sup.sendDtmf("123#");             // digits to the WhatsApp side (an IVR)
//
// It follows the browser checklist of the bridge: fetch /call/webrtc/config, create the
// RTCPeerConnection with its iceServers and iceTransportPolicy, getUserMedia with echo
// cancellation and noise suppression, offer, wait for ICE gathering (with a cap), POST the
// offer, apply the answer.

/**
 * @typedef {Object} CallSnapshot
 * @property {string} callID
 * @property {string} peer
 * @property {"inbound"|"outbound"} direction
 * @property {"calling"|"ringing"|"active"|"ended"} state
 * @property {null|"webrtc"|"websocket"} transport
 * @property {null|{state: string}} webrtc
 * @property {boolean} muted
 * @property {boolean} [held]
 * @property {Participant[]} [participants]
 * @property {Object} metadata
 * @property {string} createdAt
 * @property {string|null} answeredAt
 * @property {string|null} endedAt
 * @property {string|null} endReason
 */

/**
 * @typedef {"agent"|"listen"|"whisper"|"barge"} Role
 *   agent: talks with WhatsApp (one per call); listen: hears agent + WhatsApp, says nothing;
 *   whisper: hears both, only the agent hears it; barge: hears both, both hear it.
 */

/**
 * @typedef {Object} Participant
 * @property {string} participantID
 * @property {Role} role
 * @property {null|{state: string}} webrtc
 */

/**
 * @typedef {Object} QualityStats
 * @property {number|null} rttMs        round-trip time of the selected candidate pair
 * @property {number|null} jitterMs     interarrival jitter of the audio we receive
 * @property {number} packetsReceived
 * @property {number} packetsLost
 * @property {number|null} lossPercent  loss since the previous sample
 * @property {number} concealedSamples  samples the browser had to invent (PLC)
 * @property {number} totalSamplesReceived
 * @property {number} bytesSent
 * @property {number} bytesReceived
 */

/**
 * @typedef {Object} BridgeClientOptions
 * @property {string} [baseUrl]              the bridge's URL (default: this page's origin)
 * @property {string} [token]                API token, sent as "Authorization: Bearer"
 * @property {HTMLAudioElement} [audioElement] where the call is heard (one is created if absent)
 * @property {number} [iceGatheringTimeoutMs] cap on waiting for ICE gathering (default 2000)
 * @property {number} [maxRecoveries]        new offers tried after a failed connection (default 3)
 * @property {number} [statsIntervalMs]      how often "stats" fires (default 2000; 0 = never)
 * @property {string} [microphoneId]         deviceId of the microphone to use
 * @property {number} [disconnectGraceMs]    "disconnected" this long triggers recovery (5000)
 * @property {string} [participantID]        this browser's id on the call ([A-Za-z0-9_-]{1,64});
 *                                           unset = the bridge's default, "agent"
 * @property {Role} [role]                   the role to join with (default "agent")
 */

/**
 * @typedef {Object} ConnectOptions
 * @property {string} [participantID]  overrides the client's participantID for this call
 * @property {Role} [role]             overrides the client's role for this call
 */

/** An error answered by the bridge: `code` is its snake_case error code. */
export class BridgeError extends Error {
  /**
   * @param {number} status
   * @param {string} code
   * @param {string} message
   */
  constructor(status, code, message) {
    super(message);
    this.name = "BridgeError";
    this.status = status;
    this.code = code;
  }
}

/**
 * One browser's seat on WhatsApp calls. Events (all `CustomEvent`, data in `detail`):
 * `state` ({state}: new|connecting|connected|failed|closed|recovering), `stats` (QualityStats),
 * `call` (a call event from the bridge: {type, callID, call}), `track` (the remote MediaStream),
 * `error` (an Error during recovery), `role` ({role}: this participant's role changed),
 * `moved` ({from, to, reason}: another bridge worker carries the call on now — a deploy drained
 * the old one, or it died — and this browser offered again, by itself, for the same callID).
 */
export class BridgeClient extends EventTarget {
  /** @param {BridgeClientOptions} [options] */
  constructor(options = {}) {
    super();
    this.baseUrl = (options.baseUrl || globalThis.location?.origin || "").replace(/\/$/, "");
    this.token = options.token || "";
    this.iceGatheringTimeoutMs = options.iceGatheringTimeoutMs ?? 2000;
    this.maxRecoveries = options.maxRecoveries ?? 3;
    this.statsIntervalMs = options.statsIntervalMs ?? 2000;
    /** How long a "disconnected" connection may last before a recovery offer. */
    this.disconnectGraceMs = options.disconnectGraceMs ?? 5000;
    /** @type {number|undefined} */
    this._disconnectTimer = undefined;
    this.microphoneId = options.microphoneId || "";
    /** @type {string} this browser's participant id ("" = the bridge's default, "agent") */
    this.participantID = options.participantID || "";
    /** @type {Role} this browser's role, kept current from the role route and call events */
    this.role = options.role || "agent";
    /** @type {HTMLAudioElement} */
    this.audio = options.audioElement || Object.assign(document.createElement("audio"), { autoplay: true });
    /** @type {string|null} */
    this.callID = null;
    /** @type {RTCPeerConnection|null} */
    this.pc = null;
    /** @type {MediaStream|null} */
    this.micStream = null;
    /** @type {MediaStream|null} */
    this.remoteStream = null;
    this.muted = false;
    this.recoveries = 0;
    /** Counts negotiations: a recovery that waited skips its offer if a newer one was made. */
    this._negotiations = 0;
    /** @type {RTCPeerConnection|null} the connection a moved call plays on until the new one is up */
    this._replacing = null;
    /** @type {AnalyserNode|null} the microphone, for a level meter */
    this.inputAnalyser = null;
    /** @type {AnalyserNode|null} what the call sounds like, for a level meter */
    this.outputAnalyser = null;
    /** @type {AudioContext|null} */
    this._ctx = null;
    /** @type {number|undefined} */
    this._statsTimer = undefined;
    /** @type {EventSource|null} */
    this._events = null;
    this._closing = false;
    /** Counts connect() and close(): a connect() that a close() (or a newer connect) overtook stops. */
    this._epoch = 0;
    /** @type {Record<string, number>} */
    this._lastLoss = {};
  }

  // ---- HTTP API -------------------------------------------------------------------------

  /**
   * Call a bridge route; resolves with the JSON answer, rejects with a BridgeError.
   * @param {string} path
   * @param {Object} [body]  POSTed as JSON when given, else a GET
   * @returns {Promise<any>}
   */
  async api(path, body) {
    /** @type {Record<string, string>} */
    const headers = {};
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const resp = await fetch(this.baseUrl + path, {
      method: body === undefined ? "GET" : "POST",
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = await resp.json().catch(() => ({}));
    if (!resp.ok) {
      const err = data.error || {};
      throw new BridgeError(resp.status, err.code || "http_error", err.message || resp.statusText);
    }
    return data;
  }

  /**
   * Place a WhatsApp call.
   * @param {string} phone  digits with country code, "+digits" or a …@s.whatsapp.net JID
   * @param {Object} [metadata]
   * @returns {Promise<CallSnapshot>}
   */
  makeCall(phone, metadata) {
    return this.api("/call/make", metadata ? { phone, metadata } : { phone });
  }

  /** @param {string} callID @returns {Promise<CallSnapshot>} */
  answer(callID) {
    return this.api("/call/answer", { callID });
  }

  /** @param {string} callID @returns {Promise<CallSnapshot>} */
  getCall(callID) {
    return this.api(`/call/${encodeURIComponent(callID)}`);
  }

  /** @returns {Promise<{calls: CallSnapshot[]}>} */
  listCalls() {
    return this.api("/call/status");
  }

  // ---- WebRTC ---------------------------------------------------------------------------

  /**
   * Join a call's audio: microphone to WhatsApp, WhatsApp to the audio element.
   * Works while the call is calling, ringing or active (audio flows once it is active).
   * With a `participantID`/`role` (here or in the constructor's options) this browser joins as
   * one of several participants: a supervisor listening, whispering to the agent or barging in.
   * @param {string} callID
   * @param {ConnectOptions} [options]
   */
  async connect(callID, options = {}) {
    if (options.participantID !== undefined) this.participantID = options.participantID;
    if (options.role !== undefined) this.role = options.role;
    const epoch = ++this._epoch;
    this.callID = callID;
    this._closing = false;
    this.recoveries = 0;
    await this._ensureMicrophone(epoch);
    if (epoch === this._epoch) await this._negotiate();
    // Closed while the browser asked for the microphone or the offer was made: nothing joins.
    if (epoch !== this._epoch) throw new BridgeError(0, "closed", "closed (or connected again) while connecting");
    this._startStats();
  }

  /** @param {number} [epoch] the connect() asking: a microphone it no longer wants is stopped */
  async _ensureMicrophone(epoch = this._epoch) {
    if (this.micStream) return;
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: {
        echoCancellation: true,
        noiseSuppression: true,
        autoGainControl: true,
        channelCount: 1,
        ...(this.microphoneId ? { deviceId: { exact: this.microphoneId } } : {}),
      },
    });
    if (epoch !== this._epoch) {
      stream.getTracks().forEach((t) => t.stop());
      return;
    }
    this.micStream = stream;
    for (const track of this.micStream.getAudioTracks()) track.enabled = !this.muted;
    this.inputAnalyser = this._analyse(this.micStream);
  }

  /**
   * @param {boolean} [keepOld] make before break: the current connection plays on until the
   *   new one is connected (the call moved: the old worker relays it meanwhile)
   */
  async _negotiate(keepOld = false) {
    this._negotiations += 1;
    const epoch = this._epoch;
    const config = await this.api("/call/webrtc/config");
    if (epoch !== this._epoch) return;
    const pc = new RTCPeerConnection({
      iceServers: config.iceServers,
      iceTransportPolicy: config.iceTransportPolicy || "all",
    });
    const old = this.pc;
    if (old && !keepOld) old.close();
    if (old && keepOld) this._replacing = old;
    this.pc = pc;
    /** @type {MediaStream|null} the new connection's audio, played once it is connected */
    let pending = null;
    for (const track of /** @type {MediaStream} */ (this.micStream).getAudioTracks()) {
      pc.addTrack(track, /** @type {MediaStream} */ (this.micStream));
    }
    const play = (/** @type {MediaStream} */ stream) => {
      this.remoteStream = stream;
      this.audio.srcObject = stream;
      this.audio.play?.().catch(() => {});
      this.outputAnalyser = this._analyse(stream);
      this._emit("track", stream);
    };
    pc.ontrack = (ev) => {
      const stream = ev.streams[0] || new MediaStream([ev.track]);
      if (old && keepOld && pc.connectionState !== "connected") pending = stream;
      else play(stream);
    };
    pc.onconnectionstatechange = () => {
      if (pc !== this.pc) return;
      if (keepOld && old && pc.connectionState === "connected") {
        if (pending) play(pending);
        pending = null;
        old.close();
        if (this._replacing === old) this._replacing = null;
      }
      this._emit("state", { state: pc.connectionState });
      clearTimeout(this._disconnectTimer);
      // Up again: a later loss gets its own maxRecoveries offers.
      if (pc.connectionState === "connected") this.recoveries = 0;
      if (pc.connectionState === "failed") this._recover();
      // "disconnected" often heals by itself (a brief network blip); give it a few seconds.
      if (pc.connectionState === "disconnected") {
        this._disconnectTimer = setTimeout(() => {
          if (pc === this.pc && pc.connectionState === "disconnected") this._recover();
        }, this.disconnectGraceMs);
      }
    };
    await pc.setLocalDescription(await pc.createOffer());
    await this._gathered(pc);
    if (pc !== this.pc) return; // closed, or offered again, meanwhile: this offer is not sent
    const answer = await this.api("/call/webrtc/offer", {
      callID: this.callID,
      type: "offer",
      sdp: /** @type {RTCSessionDescription} */ (pc.localDescription).sdp,
      ...this._who(),
      // A re-offer keeps the role this participant has now (it may have changed live).
      ...(this.participantID || this.role !== "agent" ? { role: this.role } : {}),
    });
    if (pc !== this.pc) return;
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
  }

  /**
   * Wait for ICE gathering to complete, but never longer than the cap: an unreachable STUN
   * server must not stall a call; whatever candidates are ready by then are sent.
   * @param {RTCPeerConnection} pc
   */
  _gathered(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        pc.removeEventListener("icegatheringstatechange", check);
        resolve(undefined);
      };
      const check = () => {
        if (pc.iceGatheringState === "complete") done();
      };
      const timer = setTimeout(done, this.iceGatheringTimeoutMs);
      pc.addEventListener("icegatheringstatechange", check);
    });
  }

  /** Make a new offer on the same call now (what happens by itself after a failure). */
  async reconnect() {
    this.recoveries = 0;
    await this._recover();
  }

  async _recover() {
    if (this._closing || !this.callID) return;
    if (this.recoveries >= this.maxRecoveries) {
      this._emit("error", new Error(`connection failed after ${this.recoveries} recoveries`));
      return;
    }
    this.recoveries += 1;
    this._emit("state", { state: "recovering", attempt: this.recoveries });
    const before = this._negotiations;
    await new Promise((r) => setTimeout(r, 500 * this.recoveries));
    // Offered again meanwhile (the call moved to another worker): that offer is the recovery.
    if (this._negotiations !== before && this.pc && this.pc.connectionState !== "failed") return;
    try {
      await this._negotiate();
    } catch (err) {
      this._emit("error", err);
      if (!(err instanceof BridgeError && (err.status === 404 || err.status === 409))) {
        this._recover();
      }
    }
  }

  /**
   * The call moved to another bridge worker (`call.moved`): offer again for the same callID
   * at once; the bridge routes the offer to the new owner, which already carries the
   * WhatsApp side. The old connection plays on (the old worker relays the call through the
   * new owner meanwhile) until the new one is connected, then it is closed.
   * @param {{from?: string, to?: string, reason?: string}} data
   */
  async _moved(data) {
    this._emit("moved", { from: data.from, to: data.to, reason: data.reason });
    this.recoveries = 0;
    try {
      await this._negotiate(true);
    } catch (err) {
      this._replacing?.close();
      this._replacing = null;
      this._emit("error", err);
      this._recover();
    }
  }

  /** @returns {{participantID?: string}} this participant's id for request bodies */
  _who() {
    return this.participantID ? { participantID: this.participantID } : {};
  }

  /** This browser's id on the call: its participantID, or the bridge's default "agent". */
  get id() {
    return this.participantID || "agent";
  }

  /**
   * Mute or unmute. The agent's mute is the call's (the WhatsApp side hears silence); a
   * supervisor's only silences its own microphone.
   * @param {boolean} muted
   */
  async mute(muted) {
    this.muted = muted;
    for (const track of this.micStream?.getAudioTracks() || []) track.enabled = !muted;
    if (this.callID && this.role === "agent") await this.api("/call/mute", { callID: this.callID, muted });
  }

  // ---- call control (contact centres) -----------------------------------------------------

  /**
   * Change a participant's role live: a supervisor barging in, a whisperer taking over as
   * agent (a warm hand-off: the old agent becomes a listener).
   * @param {Role} role
   * @param {string} [participantID]  defaults to this browser
   * @returns {Promise<CallSnapshot>}
   */
  async setRole(role, participantID) {
    const pid = participantID || this.id;
    const snap = await this.api("/call/participants/role", { callID: this._call(), participantID: pid, role });
    this._followRole(snap);
    return snap;
  }

  /**
   * Cold hand-off: participant `to` becomes the agent; the old agent's connection is dropped.
   * @param {string} to  a participantID on the call
   * @returns {Promise<CallSnapshot>}
   */
  async transfer(to) {
    const snap = await this.api("/call/transfer", { callID: this._call(), to });
    this._followRole(snap);
    return snap;
  }

  /**
   * Hold or resume. While held WhatsApp hears `music` (an audio asset id, looped) or silence,
   * and the agent and supervisors still hear each other.
   * @param {boolean} held
   * @param {string} [music]  an assetId from GET /call/audio-assets
   * @returns {Promise<CallSnapshot>}
   */
  hold(held, music) {
    return this.api("/call/hold", { callID: this._call(), held, ...(held && music ? { music } : {}) });
  }

  /**
   * Send DTMF digits to the WhatsApp side (an IVR): RFC 4733 events on a Cloud API call,
   * in-band tones on the others. Resolves once queued (202); `call.dtmf.sent` follows.
   * @param {string} digits  0-9 * # A-D (1-32 of them)
   * @param {{durationMs?: number, gapMs?: number}} [options]  defaults 100 and 60 ms
   * @returns {Promise<{callID: string, digits: string, method: "rfc4733"|"inband", durationMs: number, gapMs: number}>}
   */
  sendDtmf(digits, options = {}) {
    /** @type {Record<string, any>} */
    const body = { callID: this._call(), digits };
    if (options.durationMs !== undefined) body.durationMs = options.durationMs;
    if (options.gapMs !== undefined) body.gapMs = options.gapMs;
    return this.api("/call/dtmf", body);
  }

  /**
   * Audio assets uploaded to the bridge (hold music, prompts).
   * @returns {Promise<{assets: {assetId: string, name: string, durationMs: number}[]}>}
   */
  listAudioAssets() {
    return this.api("/call/audio-assets");
  }

  /** @returns {string} the connected call's id (throws when there is none) */
  _call() {
    if (!this.callID) throw new BridgeError(0, "no_call", "not connected to a call");
    return this.callID;
  }

  /**
   * Keep `role` current from a snapshot (a role change, a transfer, a demotion).
   * @param {any} call
   */
  _followRole(call) {
    const me = (call?.participants || []).find((/** @type {Participant} */ p) => p.participantID === this.id);
    if (me && me.role !== this.role) {
      this.role = me.role;
      this._emit("role", { role: me.role });
    }
  }

  /** @returns {Promise<MediaDeviceInfo[]>} the microphones (labels need mic permission) */
  async listMicrophones() {
    const devices = await navigator.mediaDevices.enumerateDevices();
    return devices.filter((d) => d.kind === "audioinput");
  }

  /**
   * Switch microphone, live if a call is connected.
   * @param {string} deviceId
   */
  async setMicrophone(deviceId) {
    this.microphoneId = deviceId;
    if (!this.micStream) return;
    const old = this.micStream;
    this.micStream = null;
    await this._ensureMicrophone();
    const track = /** @type {MediaStream} */ (this.micStream).getAudioTracks()[0];
    const sender = this.pc?.getSenders().find((s) => s.track?.kind === "audio");
    if (sender) await sender.replaceTrack(track);
    old.getTracks().forEach((t) => t.stop());
  }

  /** Leave the call's audio (the WhatsApp call stays up). Safe to call twice. */
  async close() {
    this._closing = true;
    this._epoch += 1;
    clearInterval(this._statsTimer);
    clearTimeout(this._disconnectTimer);
    this.pc?.close();
    this.pc = null;
    this._replacing?.close();
    this._replacing = null;
    const callID = this.callID;
    if (callID) await this.api("/call/webrtc/close", { callID, ...this._who() }).catch(() => {});
    this.micStream?.getTracks().forEach((t) => t.stop());
    this.micStream = null;
    this.audio.srcObject = null;
    this._emit("state", { state: "closed" });
  }

  /** The bridge closed our peer connection (we left the call by someone else's doing, or the
   * call ended). */
  _dropped() {
    this._closing = true;
    this._epoch += 1;
    clearInterval(this._statsTimer);
    clearTimeout(this._disconnectTimer);
    this.pc?.close();
    this.pc = null;
    this.micStream?.getTracks().forEach((t) => t.stop());
    this.micStream = null;
    this.audio.srcObject = null;
    this._emit("state", { state: "closed" });
  }

  /**
   * Hang up the WhatsApp call (or decline it while it rings), then close (also when the
   * bridge refuses: a call that had ended meanwhile rejects with its 409, closed all the same).
   * @param {string} [callID]  defaults to the connected call
   * @returns {Promise<CallSnapshot|null>}
   */
  async hangup(callID) {
    const id = callID || this.callID;
    try {
      return id ? await this.api("/call/hangup", { callID: id }) : null;
    } finally {
      // Closed also when the bridge refuses (the call had ended meanwhile: 409).
      if (!callID || callID === this.callID) await this.close();
    }
  }

  // ---- events, levels, stats ------------------------------------------------------------

  /**
   * Follow call events (Server-Sent Events); each arrives as a "call" event.
   * @param {string} [callID]  only this call's events
   * @returns {EventSource}
   */
  subscribeEvents(callID) {
    this._events?.close();
    const q = new URLSearchParams();
    if (this.token) q.set("token", this.token);
    if (callID) q.set("callID", callID);
    const src = new EventSource(`${this.baseUrl}/call/events?${q}`);
    const forward = (/** @type {MessageEvent} */ ev) => {
      const data = JSON.parse(ev.data);
      if (data.callID === this.callID) {
        this._followRole(data.call);
        // Removed from the call by someone else (a cold transfer away from us): stop here
        // rather than try to recover a connection the bridge closed on purpose.
        if (data.type === "participant.left" && data.participantID === this.id && this.pc && !this._closing) {
          this._dropped();
        }
        // The call ended (the WhatsApp user hung up): its peer connection is gone on the
        // bridge, which the browser would notice only when ICE consent fails, ~30 s later.
        if (data.type === "call.ended" && this.pc && !this._closing) this._dropped();
        // The bridge failed our session (no RTP for its media timeout, ...): offer again now;
        // the browser would see its connection fail only when ICE consent does, ~30 s later.
        const me = (data.call?.participants || []).find((/** @type {Participant} */ p) => p.participantID === this.id);
        if (data.type === "webrtc.state" && data.participantID === this.id && me?.webrtc?.state === "failed" &&
            this.pc && !this._closing) {
          this._recover();
        }
        // Another worker carries the call on now (a deploy, a crash): offer to it.
        if (data.type === "call.moved" && this.pc && !this._closing) this._moved(data);
      }
      this._emit("call", data);
    };
    for (const type of BridgeClient.EVENT_TYPES) {
      src.addEventListener(type, forward);
    }
    // What this stream missed cannot be replayed (the bridge restarted, or lost its events
    // log): the bridge ends the stream, and an EventSource would come back with the same
    // Last-Event-ID for ever. A new stream from now instead; the app re-reads what it shows.
    src.addEventListener("replay.unavailable", (/** @type {MessageEvent} */ ev) => {
      if (this._events !== src) return;
      this._emit("replay.unavailable", JSON.parse(ev.data));
      this.subscribeEvents(callID);
    });
    this._events = src;
    return src;
  }

  /**
   * The call event types `subscribeEvents` forwards.
   * @type {string[]}
   */
  static EVENT_TYPES = ["call.created", "call.ringing", "call.active", "call.ended", "call.muted",
    "call.unmuted", "call.transport", "webrtc.offer", "webrtc.state", "participant.joined",
    "participant.left", "participant.role", "participant.ringing", "participant.transferred",
    "participant.held", "participant.unheld", "call.transferred", "call.held", "call.unheld",
    "call.dtmf", "call.dtmf.sent", "call.speech.started", "call.speech.stopped", "call.moved",
    "call.quality", "call.media_warning", "call.media_warning_cleared", "call.voicemail",
    "call.report", "call.permission", "number.warning", "number.paused",
    "number.settings_changed", "route.sip", "playback.started", "playback.finished",
    "recording.started", "recording.ready", "recording.failed", "transcript.ready",
    "stream.started", "stream.stopped", "stream.dropped", "agent.connected", "agent.reconnected",
    "agent.failed",
    "agent.stopped", "agent.speech.started", "agent.speech.stopped", "agent.interrupted",
    "agent.transcript", "agent.tool_call", "agent.tool_cancelled"];

  /**
   * @param {MediaStream} stream
   * @returns {AnalyserNode}
   */
  _analyse(stream) {
    this._ctx = this._ctx || new AudioContext();
    this._ctx.resume?.().catch(() => {});
    const analyser = this._ctx.createAnalyser();
    analyser.fftSize = 2048;
    this._ctx.createMediaStreamSource(stream).connect(analyser);
    return analyser;
  }

  /**
   * RMS level of an analyser's current window, in dBFS (-Infinity for silence).
   * @param {AnalyserNode|null} analyser
   */
  static level(analyser) {
    if (!analyser) return -Infinity;
    const buf = new Float32Array(analyser.fftSize);
    analyser.getFloatTimeDomainData(buf);
    let sum = 0;
    for (const x of buf) sum += x * x;
    const rms = Math.sqrt(sum / buf.length);
    return rms > 0 ? 20 * Math.log10(rms) : -Infinity;
  }

  /** Microphone level in dBFS. */
  inputLevel() {
    return BridgeClient.level(this.inputAnalyser);
  }

  /** Call audio level in dBFS. */
  outputLevel() {
    return BridgeClient.level(this.outputAnalyser);
  }

  /** @returns {Promise<QualityStats|null>} */
  async stats() {
    if (!this.pc) return null;
    const report = await this.pc.getStats();
    /** @type {QualityStats} */
    const out = {
      rttMs: null, jitterMs: null, packetsReceived: 0, packetsLost: 0, lossPercent: null,
      concealedSamples: 0, totalSamplesReceived: 0, bytesSent: 0, bytesReceived: 0,
    };
    report.forEach((s) => {
      if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime != null) {
        out.rttMs = s.currentRoundTripTime * 1000;
      } else if (s.type === "inbound-rtp" && s.kind === "audio") {
        out.jitterMs = s.jitter != null ? s.jitter * 1000 : null;
        out.packetsReceived = s.packetsReceived || 0;
        out.packetsLost = s.packetsLost || 0;
        out.concealedSamples = s.concealedSamples || 0;
        out.totalSamplesReceived = s.totalSamplesReceived || 0;
        out.bytesReceived = s.bytesReceived || 0;
      } else if (s.type === "outbound-rtp" && s.kind === "audio") {
        out.bytesSent = s.bytesSent || 0;
      }
    });
    const prev = this._lastLoss;
    const dRecv = out.packetsReceived - (prev.received || 0);
    const dLost = out.packetsLost - (prev.lost || 0);
    if (dRecv + dLost > 0) out.lossPercent = (100 * dLost) / (dRecv + dLost);
    this._lastLoss = { received: out.packetsReceived, lost: out.packetsLost };
    return out;
  }

  _startStats() {
    clearInterval(this._statsTimer);
    if (!this.statsIntervalMs) return;
    this._statsTimer = setInterval(async () => {
      const s = await this.stats().catch(() => null);
      if (s) this._emit("stats", s);
    }, this.statsIntervalMs);
  }

  /**
   * @param {string} type
   * @param {any} detail
   */
  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

// ---- Agents: a person ready before the phone rings (docs/agents-routing.md) ------------------
//
//   import { BridgeAgent, BridgeClient } from "./bridge-client.js";
//   const agent = new BridgeAgent({ token: agentToken });    // from POST /agents/tokens
//   agent.addEventListener("ringing", (e) => agent.accept(e.detail.callID));
//   agent.addEventListener("accepted", (e) => new BridgeClient().connect(e.detail.callID));
//   await agent.connect();
//   agent.setPresence("available");

/**
 * One agent's socket (GET /agents/connect): presence, ringing, accept/decline, the call's
 * events; it reconnects by itself (backoff up to 10 s) until close(). Events (CustomEvent,
 * the message in detail): "hello", "presence", "ringing", "accepted", "call.taken",
 * "ringing.stopped", every call event ("call.active", "call.ended", …), "error", and
 * "connection" ({state: "open" | "closed"}).
 */
export class BridgeAgent extends EventTarget {
  /**
   * @param {{baseUrl?: string, token: string, reconnect?: boolean, leg?: boolean,
   *   iceServers?: RTCIceServer[], microphone?: () => Promise<MediaStream>,
   *   audio?: HTMLAudioElement}} options
   * `leg: true`: an always-connected media leg (offered once the socket is open, reused for
   * every call: the first audio needs no offer, ICE or DTLS). The microphone is sent only on a
   * call (idle, the sender sends nothing); what the bridge sends plays in `audio`, and comes
   * as a "track" event too.
   */
  constructor(options) {
    super();
    this.legEnabled = options.leg ?? false;
    this.iceServers = options.iceServers || [];
    this.microphone = options.microphone ||
      (() => navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true } }));
    this.audio = options.audio || null;
    /** @type {RTCPeerConnection|null} the connected leg */
    this.pc = null;
    /** @type {RTCRtpSender|null} */
    this.sender = null;
    /** @type {MediaStreamTrack|null} */
    this.mic = null;
    this.muted = false;
    this.held = false;
    this.baseUrl = (options.baseUrl || globalThis.location?.origin || "").replace(/\/$/, "");
    this.token = options.token;
    this.reconnectEnabled = options.reconnect ?? true;
    /** @type {"available"|"busy"|"away"} what this agent last said (sent again on reconnect) */
    this.state = "available";
    /** @type {Set<string>} calls ringing this agent now */
    this.ringing = new Set();
    /** @type {WebSocket|null} */
    this.ws = null;
    this._closed = false;
    this._attempt = 0;
    /** @type {number|undefined} */
    this._timer = undefined;
  }

  /** Open the socket; resolves once the bridge said hello (rejects if the token is refused). */
  connect() {
    this._closed = false;
    const url = new URL(this.baseUrl + "/agents/connect", globalThis.location?.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("token", this.token);
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url.toString());
      this.ws = ws;
      let hello = false;
      ws.onmessage = (e) => {
        let msg;
        try { msg = JSON.parse(e.data); } catch { return; }
        if (msg.type === "hello") {
          hello = true;
          this._attempt = 0;
          if (this.state !== "available") this.setPresence(this.state);
          // A socket opened again keeps the leg's RTCPeerConnection: an ICE restart on it.
          if (this.legEnabled) this.restartLeg().catch((e) => this._emit("leg", { state: "failed", error: e }));
          this._emit("connection", { state: "open" });
          resolve(msg);
        }
        if (msg.type === "ringing") this.ringing.add(msg.callID);
        if (["accepted", "call.taken", "ringing.stopped", "call.ended"].includes(msg.type)) {
          this.ringing.delete(msg.callID);
        }
        if (msg.type === "presence") this.state = msg.state;
        if (msg.type === "answer" && this.pc) {
          this.pc.setRemoteDescription({ type: "answer", sdp: msg.sdp }).catch(() => {});
        }
        // On a call the microphone goes out on the leg; idle, nothing does.
        if (msg.type === "presence" && this.sender) this._sendMic(msg.state === "busy");
        this._emit(msg.type, msg);
      };
      ws.onerror = () => {
        // A refused upgrade (401) is an error, then a close in browsers; some runtimes stop at
        // the error.
        if (!hello) reject(new BridgeError(401, "agent_socket_refused", "the agent socket was refused"));
      };
      ws.onclose = () => {
        this.ws = null;
        this.ringing.clear();
        this._emit("connection", { state: "closed" });
        if (!hello) reject(new BridgeError(401, "agent_socket_refused", "the agent socket was refused or closed"));
        if (!this._closed && this.reconnectEnabled && hello) this._reconnectLater();
      };
    });
  }

  _reconnectLater() {
    const delay = Math.min(10000, 500 * 2 ** this._attempt++);
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this.connect().catch(() => this._reconnectLater()), delay);
  }

  /** @param {object} msg */
  _send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  /** @param {"available"|"busy"|"away"} state */
  setPresence(state) {
    this.state = state;
    this._send({ type: "presence", state });
  }

  /** Take a ringing call (the bridge answers "accepted", or "call.taken" if someone was first). */
  accept(callID) { this._send({ type: "accept", callID }); }

  decline(callID) { this._send({ type: "decline", callID }); }

  /**
   * Hand the call this agent is on to a group: its available agents ring while the caller
   * hears `music` (an audio asset); the first to accept takes it (you get "transferred"), or
   * nobody does and the call stays yours ("transfer.failed").
   * @param {string} callID
   * @param {string} group
   * @param {{music?: string, timeoutS?: number}} [options]
   */
  transfer(callID, group, options = {}) { this._send({ type: "transfer", callID, group, ...options }); }

  /** Hang up the call this agent is on. */
  hangup(callID) { this._send({ type: "hangup", callID }); }

  /**
   * Place a WhatsApp call from this agent (`POST /call/make` with the agent's own token): its
   * connected leg carries the call from the start, so the first packet leaves as WhatsApp
   * answers (409 `agent_not_ready` until the leg is up).
   * @param {string} phone
   * @param {Object} [metadata]
   * @returns {Promise<CallSnapshot>}
   */
  call(phone, metadata) {
    return BridgeClient.prototype.api.call(this, "/call/make", metadata ? { phone, metadata } : { phone });
  }

  /** The connected leg: a new RTCPeerConnection offered on the socket. */
  async openLeg() {
    if (this.pc) this.pc.close();
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    this.pc = pc;
    if (!this.mic) this.mic = (await this.microphone()).getAudioTracks()[0];
    this.mic.enabled = !this.muted && !this.held;
    const transceiver = pc.addTransceiver("audio", { direction: "sendrecv" });
    this.sender = transceiver.sender;
    pc.ontrack = (e) => {
      if (this.audio) this.audio.srcObject = e.streams[0] || new MediaStream([e.track]);
      this._emit("track", { track: e.track });
    };
    pc.onconnectionstatechange = () => {
      this._emit("leg", { state: pc.connectionState });
      // Lost (ICE failed): an ICE restart on the same socket; closed: a new connection.
      if (pc === this.pc && ["failed", "closed"].includes(pc.connectionState) && !this._closed) {
        setTimeout(() => { if (pc === this.pc) this.restartLeg().catch(() => {}); }, 1000);
      }
    };
    await this._offerLeg(pc);
    this._sendMic(this.state === "busy");
  }

  /**
   * Re-establish the connected leg without a new agent session: an ICE restart on the same
   * RTCPeerConnection (new ICE credentials; the same tracks, sender and audio element),
   * offered on the socket. The bridge answers it from a fresh peer of its own, with new ICE
   * credentials and a new DTLS fingerprint (a new DTLS handshake follows), and a leg that was
   * on a call rejoins it once up. Without a usable connection, a new one (`openLeg`).
   */
  async restartLeg() {
    const pc = this.pc;
    if (!pc || pc.connectionState === "closed" || pc.signalingState === "closed") return this.openLeg();
    pc.restartIce();
    await this._offerLeg(pc);
  }

  /** @param {RTCPeerConnection} pc */
  async _offerLeg(pc) {
    await pc.setLocalDescription(await pc.createOffer());
    await BridgeClient.prototype._gathered.call({ iceGatheringTimeoutMs: 2000 }, pc);
    this._send({ type: "offer", sdp: pc.localDescription?.sdp });
  }

  /** @param {boolean} on */
  _sendMic(on) {
    if (this.sender) this.sender.replaceTrack(on ? this.mic : null).catch(() => {});
  }

  /** Mute the microphone on the connected leg (the bridge then hears silence). */
  mute(muted = true) {
    this.muted = muted;
    if (this.mic) this.mic.enabled = !muted && !this.held;
  }

  /** Hold: neither side heard by the other on this leg (the call itself goes on). */
  hold(held = true) {
    this.held = held;
    if (this.mic) this.mic.enabled = !held && !this.muted;
    if (this.audio) this.audio.muted = held;
  }

  /** Key presses on the connected leg (RFC 4733 through the browser's RTCDTMFSender). */
  dtmf(digits) {
    if (this.sender && this.sender.dtmf) this.sender.dtmf.insertDTMF(digits, 100, 70);
  }

  /** Close for good (no reconnect); the bridge shows the agent away after its grace. */
  close() {
    this._closed = true;
    clearTimeout(this._timer);
    if (this.ws) this.ws.close();
    if (this.pc) this.pc.close();
    this.pc = null;
  }

  /**
   * @param {string} type
   * @param {any} detail
   */
  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
