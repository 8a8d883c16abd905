"""WhatsApp ↔ SIP calls under load (issue 48): the bridge's CPU per call with a phone on a trunk,
per codec, next to a sim call with a browser.

The bridge (``python -m bridge``, pinned to CPU 0) runs its sim engine, every WhatsApp peer a
440 Hz tone, with a trunk listener. The phones are SIPp (Debian's ``sip-tester``, pinned to CPU
1) answering every INVITE with the codec under test in its SDP and echoing the RTP back
(``-rtp_echo``). For each codec, N sim calls are placed and, once active, measured alone (the
sim calls' own cost, nothing attached); then each gets a SIP participant on the trunk and the
bridge's CPU is measured again over the window, after a warm-up. Codecs:

* ``PCMU`` (G.711 µ-law), ``PCMA`` (A-law): the bus's 16 kHz resampled to 8 kHz and coded
  each way;
* ``G722``: coded at the bus's 16 kHz (FFmpeg's codec through PyAV), no resampling;
* ``opus``: coded at 16 kHz by libopus (32 kbit/s, FEC). Not WhatsApp's Opus passed through
  (not built yet: the sim's WhatsApp side is PCM and has no Opus to pass).

The reference is ``bench.run``'s own point for the same N: sim calls each with an aiortc
browser on WebRTC (Opus, DTLS-SRTP, ICE), its load generator pinned to CPU 1 — what "a sim
call" costs in every other table of ``docs/performance.md``. Both are the whole bridge
process's CPU divided by the calls (``cpu_pct_per_call``); ``added_pct_per_call`` is the SIP
leg's share (loaded minus the same calls alone). The machine is shared: ``--rounds`` repeats
the list, the reference first each round, and medians are reported.

``--engine cloudapi`` runs the same calls as Cloud API calls instead: the WhatsApp user is
``bench.meta``'s WebRTC peer (on CPU 1, echoing what it hears), answered by the bridge's
WhatsApp leg. On ``opus`` the phone alone on the call then gets WhatsApp's packets untouched and
WhatsApp the phone's (``calls/forwarding.py``): no encoder on either leg. The point records
the share of the WhatsApp leg's packets that were forwarded (``forwarded_to_whatsapp``).

On ``PCMU``/``PCMA`` with ``--engine cloudapi`` the calls go the other way, as issue 60's
target (WhatsApp on G.711 at Meta ⇄ a G.711 PBX phone) has them: the SIP phones' trunk is the
one that answers the number (``answer.numbers``: ``default``, the bridge's one number;
``Catalog.answering_trunk``), and N WhatsApp users call the business with Meta's offer of
that G.711 beside Opus (as for a number with ``audio.additional_codecs``; ``bench.meta``'s
``/bench/user_calls``). The bridge answers Meta in the phone's G.711 (``sdp.answer_codec``)
and calls the phone itself; both legs then forward the packets untouched, no decoding, no
coding. There is no "calls alone" measurement on these points (each call has its phone from
the start): ``cpu_pct_per_call`` is the whole call's cost. Besides ``forwarded_to_whatsapp``
they record ``not_decoded_from_whatsapp``, the share of WhatsApp's packets that were not
decoded (forwarded to the phone: ``packetsNotDecoded`` against those decoded). ``per_call``
has both counts for each call, and why the phone's packets offered to WhatsApp's sender were
not carried (``forwardNotCarried``, by reason): one call whose pass-through never engaged one
way is a dip of a tenth in the point's share, and plain in its row.

On ``--engine cloudapi`` the WhatsApp users' packets cross a real path's network, not
loopback's clean one (``bench.meta``'s ``Network``): 0-20 ms of jitter, 1 % loss and a clock
50 ppm off the bridge's by default (``--jitter-ms``, ``--loss``, ``--drift-ppm``, ``--seed``;
all 0 for the clean path the figures before 2026-11-27 had).

``python -m bench.trunk [--calls 10,20] [--window 20] [--codecs PCMU,G722,opus] [--rounds 1]
[--engine sim|cloudapi] [--jitter-ms 20] [--loss 0.01] [--drift-ppm 50] [--seed 1]``
(the real G.711 measurement: ``--engine cloudapi --calls 10 --window 20 --codecs PCMU,opus``)
prints a table and writes ``bench/results/trunk-<date>.json``. A benchmark, not a test:
nothing here asserts on speed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp

from bench.quality import RESULTS, stamped, write
from bench.run import (
    META_PNID,
    META_SECRET,
    META_TOKEN,
    delta,
    forwarding,
    free_port,
    pinned,
    run_point,
    scrape,
    start_meta,
    start_server,
    stop,
    tree_cpu_seconds,
    tree_rss_bytes,
    until_healthy,
)

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "tests" / "sip" / "scenarios" / "pbx_phone_answer.xml"
PCMU_SDP = "m=audio [media_port] RTP/AVP 0\n      a=rtpmap:0 PCMU/8000"
SDP = {
    "PCMU": PCMU_SDP,
    "PCMA": "m=audio [media_port] RTP/AVP 8\n      a=rtpmap:8 PCMA/8000",
    "G722": "m=audio [media_port] RTP/AVP 9\n      a=rtpmap:9 G722/8000",
    "opus": "m=audio [media_port] RTP/AVP 111\n      a=rtpmap:111 opus/48000/2\n"
    "      a=fmtp:111 useinbandfec=1",
}
"""What the phones answer for each codec (SIPp echoes whatever RTP comes)."""
G711 = ("PCMU", "PCMA")


def scenario(codec: str, directory: Path) -> Path:
    """The tests' answering-phone scenario with ``codec`` in its SDP answer."""
    text = SCENARIO.read_text()
    assert PCMU_SDP in text, "the scenario's SDP changed: update bench/trunk.py"
    path = directory / f"phones-{codec}.xml"
    path.write_text(text.replace(PCMU_SDP, SDP[codec]))
    return path


def network_args(args: argparse.Namespace) -> list[str]:
    """The WhatsApp peers' path (``bench.meta``'s :class:`~bench.meta.Network`): by default a
    real one's, 0-20 ms of jitter, 1 % loss, a clock 50 ppm off ours (``--jitter-ms 0 --loss 0
    --drift-ppm 0``: loopback's clean path)."""
    return [
        "--jitter-ms",
        str(args.jitter_ms),
        "--loss",
        str(args.loss),
        "--drift-ppm",
        str(args.drift_ppm),
        "--seed",
        str(args.seed),
    ]


def cloudapi_env(meta_port: int) -> dict[str, str]:
    """The bridge on the Cloud API against ``bench.meta`` (as ``bench.run``'s cloudapi)."""
    return dict(
        BRIDGE_ENGINE="cloudapi",
        BRIDGE_OPUS_PASSTHROUGH="true",
        BRIDGE_ENGINE_URL=f"http://127.0.0.1:{meta_port}/v23.0",
        BRIDGE_ENGINE_TOKEN=META_TOKEN,
        BRIDGE_CLOUDAPI_PHONE_NUMBER_ID=META_PNID,
        BRIDGE_CLOUDAPI_APP_SECRET=META_SECRET,
        BRIDGE_CLOUDAPI_VERIFY_TOKEN="bench-verify",
    )


async def start_bridge(
    port: int, trunk_port: int, data: Path, extra: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    env = dict(
        os.environ,
        BRIDGE_ICE_ADDRESSES="127.0.0.1",
        BRIDGE_STUN_URLS="",
        BRIDGE_MAX_CALLS="2000",
        BRIDGE_SIM_ANSWER_DELAY="0.05",
        BRIDGE_SIM_PEER="tone",
        BRIDGE_SIM_TONE_HZ="440",
        BRIDGE_SIP_TRUNK_LISTEN=f"127.0.0.1:{trunk_port}",
        BRIDGE_DATA_DIR=str(data),
        # The sim calls measured alone send nothing anyone hears: the media watchdog's
        # warnings about it are expected here.
        BRIDGE_LOG_LEVEL="error",
        BRIDGE_RATE_LIMIT="10000",
        BRIDGE_RATE_BURST="10000",
        **(extra or {}),
    )
    argv = [sys.executable, "-m", "bridge", "--port", str(port)]
    proc = await asyncio.create_subprocess_exec(
        *pinned(0, argv), env=env, cwd=ROOT, stdout=asyncio.subprocess.DEVNULL
    )
    await until_healthy(port, "the bridge")
    return proc


async def start_phones(codec: str, calls: int, directory: Path) -> tuple[Any, int]:
    """SIPp answering ``calls`` INVITEs with ``codec``, echoing RTP; its SIP port."""
    port = free_port()
    argv = ["sipp", "-sf", str(scenario(codec, directory)), "-t", "u1", "-i", "127.0.0.1"]
    argv += ["-p", str(port), "-mi", "127.0.0.1", "-rtp_echo", "-m", str(calls)]
    argv += ["-nostdin", "-timeout", "600s"]
    with (directory / f"sipp-{codec}.out").open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            *pinned(1, argv),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    await asyncio.sleep(0.3)  # UDP: nothing to probe; SIPp binds at once
    return proc, port


async def stop_group(proc: Any) -> None:
    """Stop SIPp (the leader of its own session) by its pid."""
    if proc.returncode is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), 5)
    except TimeoutError:
        os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


async def cpu_over(pid: int, seconds: float) -> float:
    """The process's CPU over ``seconds``, as a share of one core."""
    c0, t0 = tree_cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    return (tree_cpu_seconds(pid) - c0) / (time.monotonic() - t0)


async def trunk_point(
    http: aiohttp.ClientSession,
    base: str,
    pid: int,
    codec: str,
    calls: int,
    warmup: float,
    window: float,
    directory: Path,
) -> dict[str, Any]:
    phones, phones_port = await start_phones(codec, calls, directory)
    point: dict[str, Any] = {"target": f"trunk-{codec}", "codec": codec, "calls": calls}
    trunk_id = ""
    cids: list[str] = []
    try:
        trunk = {
            "name": f"bench {codec}",
            "uri": f"sip:127.0.0.1:{phones_port};transport=udp",
            "codecs": [codec],
            "keepalive": 0,  # SIPp's scenario takes INVITEs only
        }
        async with http.post(base + "/trunks", json=trunk) as r:
            assert r.status == 201, await r.text()
            trunk_id = (await r.json())["trunkID"]
        for i in range(calls):
            async with http.post(base + "/call/make", json={"phone": f"55219{i:08d}"}) as r:
                assert r.status == 201, await r.text()
                cids.append((await r.json())["callID"])
        await until_all(http, base, cids, lambda c: c["state"] == "active", "active")
        await asyncio.sleep(warmup)
        alone = await cpu_over(pid, window / 2)
        for cid in cids:
            body = {"callID": cid, "participantID": "desk", "sip": {"uri": "sip:phone@127.0.0.1"}}
            async with http.post(base + "/call/participants", json=body) as r:
                assert r.status == 202, await r.text()

        def joined(call: dict[str, Any]) -> bool:
            sip = [p["sip"] for p in call.get("participants", []) if p.get("sip")]
            return bool(sip) and sip[0]["state"] == "joined" and sip[0]["codec"] == codec

        await until_all(http, base, cids, joined, f"joined on {codec}")
        await asyncio.sleep(warmup)
        m0 = await scrape(http, base)
        loaded = await cpu_over(pid, window)
        m1 = await scrape(http, base)
        point.update(
            window_s=window,
            alone_cpu_pct=100 * alone,
            server_cpu_pct=100 * loaded,
            cpu_pct_per_call=100 * loaded / calls,
            added_pct_per_call=100 * (loaded - alone) / calls,
            rss_bytes=tree_rss_bytes(pid),
            load_1m=os.getloadavg()[0],
        )
        point.update(bus_frames(m0, m1, calls, window))
        point.update(await forwarding(http, base))
    finally:
        point["phones_exit"] = await end_point(http, base, cids, trunk_id, phones)
    return point


async def g711_point(
    meta_port: int,
    http: aiohttp.ClientSession,
    base: str,
    pid: int,
    codec: str,
    calls: int,
    warmup: float,
    window: float,
    directory: Path,
) -> dict[str, Any]:
    """WhatsApp users calling on ``codec`` (Meta's offer: Opus and it), the number answered
    into the phones' trunk: the bridge's CPU with both legs forwarding (module docstring)."""
    phones, phones_port = await start_phones(codec, calls, directory)
    point: dict[str, Any] = {"target": f"trunk-{codec}", "codec": codec, "calls": calls}
    point["direction"] = "whatsapp-user-calls"
    trunk_id = ""
    cids: list[str] = []
    try:
        trunk = {
            "name": f"bench {codec}",
            "uri": f"sip:127.0.0.1:{phones_port};transport=udp",
            "codecs": [codec],
            "keepalive": 0,  # SIPp's scenario takes INVITEs only
            "answer": {"numbers": ["default"], "uri": f"sip:phone@127.0.0.1:{phones_port}"},
        }
        async with http.post(base + "/trunks", json=trunk) as r:
            assert r.status == 201, await r.text()
            trunk_id = (await r.json())["trunkID"]
        meta = f"http://127.0.0.1:{meta_port}/bench/user_calls"
        async with http.post(meta, json={"calls": calls, "codec": codec}) as r:
            assert r.status == 200, await r.text()
        deadline = time.monotonic() + 30
        while len(cids) < calls:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(cids)} of {calls} WhatsApp calls reached the bridge")
            await asyncio.sleep(0.2)
            async with http.get(base + "/call/status") as r:
                cids = [c["callID"] for c in (await r.json())["calls"]]

        def joined(call: dict[str, Any]) -> bool:
            sip = [p["sip"] for p in call.get("participants", []) if p.get("sip")]
            return bool(sip) and sip[0]["state"] == "joined" and sip[0]["codec"] == codec

        await until_all(http, base, cids, joined, f"answered by the phone on {codec}")
        await asyncio.sleep(warmup)
        m0 = await scrape(http, base)
        loaded = await cpu_over(pid, window)
        m1 = await scrape(http, base)
        point.update(
            window_s=window,
            server_cpu_pct=100 * loaded,
            cpu_pct_per_call=100 * loaded / calls,
            rss_bytes=tree_rss_bytes(pid),
            load_1m=os.getloadavg()[0],
        )
        point.update(bus_frames(m0, m1, calls, window))
        point.update(await forwarding(http, base))
        point.update(await not_decoded(http, base, cids))
        point["per_call"] = await per_call(http, base, cids)
    finally:
        point["phones_exit"] = await end_point(http, base, cids, trunk_id, phones)
    return point


def bus_frames(m0: Any, m1: Any, calls: int, window: float) -> dict[str, float]:
    """Frames the bus carried each way, per call and second: 50 when every tick ran, 0 when
    nothing was coded (both legs forwarding)."""
    return {
        f"{d}_frames_per_call_s": delta(m0, m1, "bridge_bus_frames_total", direction=d)
        / calls
        / window
        for d in ("uplink", "downlink")
    }


async def end_point(
    http: aiohttp.ClientSession, base: str, cids: list[str], trunk_id: str | None, phones: Any
) -> int | None:
    """Hang up a point's calls, delete its trunk and stop its phones: SIPp's exit code
    (``None`` when it did not exit within 10 s)."""
    for cid in cids:
        async with http.post(base + "/call/hangup", json={"callID": cid}):
            pass
    if trunk_id:
        async with http.delete(f"{base}/trunks/{trunk_id}"):
            pass
    try:
        code: int | None = await asyncio.wait_for(phones.wait(), 10)
    except TimeoutError:
        code = None
    await stop_group(phones)
    return code


async def not_decoded(http: aiohttp.ClientSession, base: str, cids: list[str]) -> dict[str, Any]:
    """The share of WhatsApp's packets the bridge did not decode (forwarded to the phone as
    they are: ``packetsNotDecoded`` against the frames decoded), over the calls since their
    start; and the path the bridge saw them cross (its RTP statistics of the WhatsApp leg:
    the share lost, the mean interarrival jitter), so a point says what network it had."""
    skipped = decoded = received = lost = 0
    jitter: list[float] = []
    for cid in cids:
        async with http.get(f"{base}/call/{cid}/stats") as r:
            leg = ((await r.json()).get("leg") or {}).get("webrtc") or {}
        skipped += leg.get("packetsNotDecoded", 0)
        decoded += leg.get("framesReceived", 0)
        totals = leg.get("totals") or {}
        received += totals.get("uplinkPacketsReceived", 0)
        lost += totals.get("uplinkPacketsLost", 0)
        jitter.append(totals.get("uplinkJitterMs", 0.0))
    return {
        "not_decoded_from_whatsapp": round(skipped / max(1, skipped + decoded), 3),
        "whatsapp_loss_seen": round(lost / max(1, received + lost), 4),
        "whatsapp_jitter_ms_seen": round(sum(jitter) / max(1, len(jitter)), 2),
    }


async def per_call(http: aiohttp.ClientSession, base: str, cids: list[str]) -> list[dict[str, Any]]:
    """Each call's WhatsApp leg, since the call's start: frames sent to WhatsApp and how many
    of them were forwarded (the phone's packets as they came), packets from WhatsApp decoded
    and not decoded (forwarded to the phone): a call whose pass-through did not engage one way
    shows here, where the point's shares only dip."""
    rows = []
    for cid in cids:
        async with http.get(f"{base}/call/{cid}/stats") as r:
            leg = ((await r.json()).get("leg") or {}).get("webrtc") or {}
        rows.append(
            {
                "callID": cid,
                "to_whatsapp_sent": leg.get("framesSent", 0),
                "to_whatsapp_forwarded": leg.get("framesForwarded", 0),
                "from_whatsapp_decoded": leg.get("framesReceived", 0),
                "from_whatsapp_not_decoded": leg.get("packetsNotDecoded", 0),
                "to_whatsapp_not_carried": leg.get("forwardNotCarried", {}),
            }
        )
    return rows


async def until_all(
    http: aiohttp.ClientSession, base: str, cids: list[str], ok: Any, what: str
) -> None:
    deadline = time.monotonic() + 30
    while True:
        states = []
        for cid in cids:
            async with http.get(f"{base}/call/{cid}") as r:
                states.append(ok(await r.json()))
        if all(states):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{sum(states)} of {len(cids)} calls {what} after 30 s")
        await asyncio.sleep(0.2)


async def reference_point(calls: int, warmup: float, window: float) -> dict[str, Any]:
    """``bench.run``'s sim call with a browser, for the same N (its own bridge process)."""
    port = free_port()
    proc = await start_server("bridge", port)
    try:
        await asyncio.sleep(1.0)
        idle_rss = tree_rss_bytes(proc.pid)
        point = await run_point(
            "bridge", proc, f"http://127.0.0.1:{port}", calls, warmup, window, idle_rss
        )
    finally:
        await stop(proc)
    keep = ("calls", "server_cpu_pct", "cpu_pct_per_call", "load_1m", "connected")
    return {"target": "sim+browser", **{k: point[k] for k in keep if k in point}}


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    result = stamped("trunk")
    calls_list = [int(n) for n in args.calls.split(",") if n]
    result.update(calls=calls_list, window_s=args.window, warmup_s=args.warmup, points=[])
    result["engine"] = args.engine
    if args.engine == "cloudapi":
        result["network"] = {
            "jitter_ms": args.jitter_ms,
            "loss": args.loss,
            "drift_ppm": args.drift_ppm,
            "seed": args.seed,
        }
    codecs = [c for c in args.codecs.split(",") if c]
    with tempfile.TemporaryDirectory(prefix="bench-trunk-") as tmp:
        directory = Path(tmp)
        for round_ in range(args.rounds):
            for calls in calls_list:
                if not args.no_reference:
                    ref = await reference_point(calls, args.warmup, args.window)
                    ref["round"] = round_
                    result["points"].append(ref)
                    show(ref)
                port, trunk_port = free_port(), free_port()
                data = directory / f"data-{round_}-{calls}"
                data.mkdir()
                meta = None
                meta_port = 0
                extra: dict[str, str] = {}
                if args.engine == "cloudapi":
                    meta_port = free_port()
                    meta = await start_meta(meta_port, port, network_args(args))
                    extra = cloudapi_env(meta_port)
                proc = await start_bridge(port, trunk_port, data, extra)
                base = f"http://127.0.0.1:{port}"
                try:
                    async with aiohttp.ClientSession() as http:
                        for codec in codecs:
                            measure = trunk_point
                            if args.engine == "cloudapi" and codec in G711:
                                measure = partial(g711_point, meta_port)
                            point = await measure(
                                http,
                                base,
                                proc.pid,
                                codec,
                                calls,
                                args.warmup,
                                args.window,
                                directory,
                            )
                            point["round"] = round_
                            point["engine"] = args.engine
                            result["points"].append(point)
                            show(point)
                finally:
                    await stop(proc)
                    if meta is not None:
                        await stop(meta)
    result["medians"] = medians(result["points"])
    return result


def show(point: dict[str, Any]) -> None:
    extra = ""
    if "not_decoded_from_whatsapp" in point:
        extra = (
            f"  (WhatsApp calls in; frames/s a call up {point['uplink_frames_per_call_s']:.1f}"
            f" down {point['downlink_frames_per_call_s']:.1f}; forwarded to WhatsApp "
            f"{point['forwarded_to_whatsapp']:.0%}, WhatsApp's not decoded "
            f"{point['not_decoded_from_whatsapp']:.0%}; the path seen: "
            f"{point['whatsapp_loss_seen']:.1%} lost, jitter "
            f"{point['whatsapp_jitter_ms_seen']:.1f} ms; SIPp exit {point['phones_exit']})"
        )
    if "added_pct_per_call" in point:
        extra = (
            f"  (the calls alone {point['alone_cpu_pct']:.1f} %; the SIP leg adds "
            f"{point['added_pct_per_call']:.2f} % a call; frames/s a call "
            f"up {point['uplink_frames_per_call_s']:.1f} down "
            f"{point['downlink_frames_per_call_s']:.1f}; forwarded to WhatsApp "
            f"{point.get('forwarded_to_whatsapp', 0):.0%}; SIPp exit {point['phones_exit']})"
        )
    print(
        f"{point['target']:>12}  N={point['calls']}  {point['server_cpu_pct']:5.1f} % of a core"
        f"  {point['cpu_pct_per_call']:.2f} % a call  load {point['load_1m']:.1f}{extra}",
        flush=True,
    )


def medians(points: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per target and N (``trunk-PCMU@10``): the medians over the rounds."""
    out: dict[str, dict[str, float]] = {}
    for key in dict.fromkeys(f"{p['target']}@{p['calls']}" for p in points):
        mine = [p for p in points if f"{p['target']}@{p['calls']}" == key]
        row = {"cpu_pct_per_call": statistics.median(p["cpu_pct_per_call"] for p in mine)}
        if "added_pct_per_call" in mine[0]:
            row["added_pct_per_call"] = statistics.median(p["added_pct_per_call"] for p in mine)
        out[key] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", default="10,20", help="comma-separated N")
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--codecs", default="PCMU,G722,opus")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--no-reference", action="store_true", help="no sim+browser point")
    parser.add_argument("--engine", choices=("sim", "cloudapi"), default="sim")
    parser.add_argument(
        "--jitter-ms", type=float, default=20.0, help="cloudapi: the WhatsApp peers' jitter"
    )
    parser.add_argument(
        "--loss", type=float, default=0.01, help="cloudapi: share of their RTP packets lost"
    )
    parser.add_argument(
        "--drift-ppm", type=float, default=50.0, help="cloudapi: their clock against ours"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    if shutil.which("sipp") is None:
        sys.exit("bench.trunk needs SIPp (Debian sip-tester: make system-deps)")
    result = asyncio.run(bench(args))
    for key, row in result["medians"].items():
        print(f"median {key:>18}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()))
    name = f"trunk-{time.strftime('%Y%m%d-%H%M', time.gmtime())}.json"
    print("wrote", write(result, Path(args.out), name))


if __name__ == "__main__":
    main()
