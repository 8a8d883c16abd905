// The bridge's call report page: GET /call/reports and /call/status list the calls, and
// GET /call/{callID}/report draws one as charts (uPlot). A live call is fetched again every
// two seconds. The token is the API's (?token=, or remembered like the demo page's).
"use strict";
const $ = (id) => document.getElementById(id);
const tokenInput = $("token");
tokenInput.value = new URLSearchParams(location.search).get("token") || localStorage.getItem("bridgeToken") || "";
tokenInput.addEventListener("change", () => { localStorage.setItem("bridgeToken", tokenInput.value); listCalls(); });

const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f"];
const CHARTS = {
  network: ["packetsLost", "packetsRecovered", "lossReportedPercent", "jitterMs", "rttMs",
            "kbpsReceived", "kbpsSent"],
  receiver: ["delayMs", "concealedMs", "stretchedMs"],
  audio: ["packetsReceived", "mos"],
  levels: ["levelReceivedDbfs", "levelSentDbfs"],
};
// Fields drawn on a second axis, on the right: its scale and label.
const RIGHT = { mos: ["mos", "MOS"], kbpsReceived: ["kbps", "kbit/s"], kbpsSent: ["kbps", "kbit/s"] };
let chosen = new URLSearchParams(location.search).get("callID");
let plots = [];
let timer = null;

async function api(path) {
  const headers = tokenInput.value ? { Authorization: `Bearer ${tokenInput.value}` } : {};
  const r = await fetch(path, { headers });
  const body = await r.json();
  if (!r.ok) throw new Error(body.error?.message || body.message || r.status);
  return body;
}

async function listCalls() {
  try {
    const [live, stored] = await Promise.all([api("/call/status"), api("/call/reports")]);
    const box = $("calls");
    box.replaceChildren();
    const liveIds = new Set(live.calls.map((c) => c.callID));
    for (const id of [...liveIds, ...stored.reports.filter((r) => !liveIds.has(r))]) {
      const b = document.createElement("button");
      b.textContent = (liveIds.has(id) ? "● " : "") + id.slice(0, 12);
      b.className = (liveIds.has(id) ? "live" : "") + (id === chosen ? " chosen" : "");
      b.onclick = () => { chosen = id; show(); listCalls(); };
      box.append(b);
    }
    $("status").textContent = `${liveIds.size} live, ${stored.reports.length} stored`;
    if (chosen) show();
  } catch (e) {
    $("status").textContent = `cannot list calls: ${e.message}`;
  }
}

function fmt(v) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "object") return Object.entries(v).map(([k, x]) => `${k} ${fmt(x)}`).join(", ");
  return String(v);
}

function drawSummary(s) {
  const dl = $("summary");
  dl.replaceChildren();
  const items = [
    ["call", s.callID], ["end", s.endReason ? `${s.endReason} (${fmt(s.endedBy)})` : "live"],
    ["duration s", s.durationS], ["set-up s", s.setupS], ["first audio s", s.firstAudioS],
    ["MOS average", s.mosAverage], ["worst minute", s.mosWorstMinute],
    ["loss", s.lossFraction], ["concealed", s.concealedFraction], ["media warnings", s.mediaWarnings],
    ["set-up by leg s", s.setup && Object.fromEntries(Object.entries(s.setup).map(
      ([leg, x]) => [leg, `in ${fmt(x.receivedS)} out ${fmt(x.sentS)}`]))],
    ["neighbours on this worker", s.neighbours],
  ];
  for (const [k, v] of items) {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = fmt(v); dd.dataset.field = k;
    dl.append(dt, dd);
  }
}

// The call's events as vertical markers, labelled, on every chart.
function markers(events) {
  return {
    hooks: {
      draw: [(u) => {
        const ctx = u.ctx;
        ctx.save();
        ctx.font = `${10 * devicePixelRatio}px sans-serif`;
        // Who was speaking (call.speech.started/stopped, BRIDGE_SPEECH_EVENTS): a band per side.
        const open = {};
        const sides = ["whatsapp", "agent"];
        const band = (side, from, to) => {
          const x0 = u.valToPos(from, "x", true), x1 = u.valToPos(to, "x", true);
          const row = sides.indexOf(side);
          ctx.fillStyle = row === 0 ? "rgba(44,160,44,0.18)" : "rgba(31,119,180,0.18)";
          const h = 6 * devicePixelRatio;
          ctx.fillRect(x0, u.bbox.top + u.bbox.height - h * (row + 1), Math.max(1, x1 - x0), h);
        };
        for (const e of events) {
          if (e.type === "call.speech.started") open[e.side] = e.t;
          else if (e.type === "call.speech.stopped" && open[e.side] !== undefined) {
            band(e.side, open[e.side], e.t);
            delete open[e.side];
          }
        }
        for (const [side, from] of Object.entries(open)) band(side, from, u.scales.x.max);
        for (const e of events) {
          if (e.type.startsWith("call.speech.")) continue;
          const x = u.valToPos(e.t, "x", true);
          if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
          const warn = e.type.startsWith("call.media_warning") && !e.type.endsWith("cleared");
          ctx.strokeStyle = warn ? "#e60" : "#999";
          ctx.setLineDash([4, 4]);
          ctx.beginPath(); ctx.moveTo(x, u.bbox.top); ctx.lineTo(x, u.bbox.top + u.bbox.height); ctx.stroke();
          ctx.fillStyle = ctx.strokeStyle;
          ctx.fillText(e.type.replace(/^call\./, ""), x + 3, u.bbox.top + 12 * devicePixelRatio);
        }
        ctx.restore();
      }],
    },
  };
}

function chartData(timeline, fields) {
  const legs = [...new Set(timeline.map((r) => r.leg))];
  const times = [...new Set(timeline.map((r) => r.t))].sort((a, b) => a - b);
  const index = new Map(times.map((t, i) => [t, i]));
  const series = [{}];
  const data = [times];
  let k = 0;
  for (const leg of legs) {
    for (const f of fields) {
      const col = new Array(times.length).fill(null);
      let any = false;
      for (const r of timeline) {
        if (r.leg === leg && r[f] !== null && r[f] !== undefined) { col[index.get(r.t)] = r[f]; any = true; }
      }
      if (!any) continue;
      series.push({ label: `${leg} ${f}`, stroke: COLOURS[k++ % COLOURS.length], width: 1.5, spanGaps: false,
                    scale: RIGHT[f] ? RIGHT[f][0] : "y", dash: f.includes("Sent") ? [6, 3] : undefined });
      data.push(col);
    }
  }
  return { series, data };
}

function drawCharts(report) {
  for (const p of plots) p.destroy();
  plots = [];
  const width = Math.min(1100, document.body.clientWidth - 20);
  let points = 0;
  for (const [name, fields] of Object.entries(CHARTS)) {
    const { series, data } = chartData(report.timeline, fields);
    const axes = [{ label: "s since the call was created" },
                  { scale: "y", label: name === "levels" ? "dBFS" : undefined }];
    const right = [...new Set(fields.filter((f) => RIGHT[f]).map((f) => RIGHT[f]))];
    const scales = new Set(series.map((s) => s.scale));
    for (const [scale, label] of new Map(right)) {
      if (scales.has(scale)) axes.push({ scale, side: 1, grid: { show: false }, label });
    }
    // Levels: digital silence (-120) to full scale; the silence warning's line at -90 dBFS.
    const scaleOpts = { x: { time: false }, mos: { range: [1, 5] } };
    if (name === "levels") scaleOpts.y = { range: [-120, 0] };
    const opts = { width, height: 220, series, axes, plugins: [markers(report.events)], scales: scaleOpts };
    const el = $(`chart-${name}`);
    el.replaceChildren();
    plots.push(new uPlot(opts, data, el));
    el.dataset.series = String(series.length - 1);
    points += data.slice(1).reduce((n, col) => n + col.filter((v) => v !== null).length, 0);
  }
  document.body.dataset.points = String(points);
}

function drawEvents(events) {
  const ol = $("events");
  ol.replaceChildren();
  for (const e of events) {
    const li = document.createElement("li");
    const { t, type, ...rest } = e;
    li.textContent = `${t.toFixed(1)} s  ${type}  ${Object.entries(rest).map(([k, v]) => `${k}=${v}`).join(" ")}`;
    if (type === "call.media_warning") li.className = "warning";
    ol.append(li);
  }
}

async function show() {
  clearTimeout(timer);
  if (!chosen) return;
  try {
    const report = await api(`/call/${encodeURIComponent(chosen)}/report`);
    drawSummary(report.summary);
    drawCharts(report);
    drawEvents(report.events);
    document.body.dataset.drawn = chosen;
    if (!report.summary.endReason) timer = setTimeout(show, 2000); // live: follow it
  } catch (e) {
    $("status").textContent = `cannot read the report of ${chosen}: ${e.message}`;
  }
}

listCalls();
