"""``make bench``: how many calls a core carries, and how much delay the bridge adds.

Starts the server under test pinned to CPU 0 (when ``taskset`` exists) and drives N
concurrent two-way calls from ``bench/loadgen.py`` pinned to CPU 1. Targets: ``bridge`` (the
bridge on its sim engine), ``cloudapi`` (the bridge with ``BRIDGE_ENGINE=cloudapi``: two WebRTC
legs per call, the WhatsApp one to ``bench/meta.py``, a Meta stand-in on CPU 1 that answers the
Graph actions, sends the signed webhooks and echoes the audio), ``cloudapi-sip-sdes`` (the same
calls on Meta's SIP road with SDES-SRTP media: the bridge's INVITEs go to ``bench/sip_meta.py``
on CPU 1, which echoes the bridge's SRTP; ``--targets cloudapi,cloudapi-sip-sdes`` compares the
two roads' CPU per call in one run), ``zuckzapgo`` (the bridge with ``BRIDGE_ENGINE=zuckzapgo``:
a remote PCM engine, through ``EnginePump``'s tasks, the ``Reframer`` and the drift-following
``DownlinkSink``, against ``bench/zuckzapgo_echo.py`` on CPU 1, the test fake of ZuckZapGo
echoing each call's PCM in 60 ms frames paced on its own clock, as a real engine's are) and
``echo`` (a bare aiortc echo server, for comparison).
For each N it reports server CPU per call, the bridge/echo ratio,
frames delivered per call, the bridge-added latency per direction (from the bridge's own
frame-transit histograms), offer-to-answer p50/p99, RSS per call and the share of downlink
frames on time (and, for ``cloudapi``, of the frames the WhatsApp side heard on time). Writes
``bench/results/<stamp>.json`` and a PNG plot, prints a table.
``--participants 1,3`` also measures contact-centre calls on the bridge (an agent plus a
whispering and a barging supervisor, each its own peer connection) next to the plain ones, in
the same run, and reports the 3-participant/1-participant CPU ratio per N.
``--audio tone,silence`` measures each bridge point twice, back to back: every call sending
the tone (someone speaking both ways: the sim peer echoes it) and every call sending digital
silence (nobody speaking), and reports the silence/tone CPU ratio per N.
``--rounds K`` runs the whole list K times, alternating (bridge, echo, bridge, echo, ...), pairs
each ratio within a round and reports its median over the rounds: this VM's host changes speed
by up to a third between one minute and the next, which a single pair of points cannot tell
from a change of code.
After the sweep (not with ``--smoke``) it runs two parts of its own: the engine-delay part
(``bench/engine_delay.py``; ``--engine-delay none`` skips) and the idle-legs part
(``bench/idle_legs.py``: 10 idle connected agent legs × 20 s, CPU and wake-ups per leg;
``--idle-legs 0`` skips).
This is a benchmark, not a test: nothing here asserts on speed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bench.cluster import start_redis, tree, worker_env
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
TASKSET = shutil.which("taskset") if (os.cpu_count() or 1) >= 2 else None


def pinned(cpu: int, argv: list[str]) -> list[str]:
    return [TASKSET, "-c", str(cpu), *argv] if TASKSET else argv


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a server: the process and its workers (``BRIDGE_WORKERS``)."""
    return sum(cpu_seconds(p) for p in tree(pid))


def tree_rss_bytes(pid: int) -> int:
    return sum(rss_bytes(p) for p in tree(pid))


def tree_fds(pid: int) -> int:
    return sum(len(os.listdir(f"/proc/{p}/fd")) for p in tree(pid))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime, all threads


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


async def scrape_all(
    http: aiohttp.ClientSession, bases: list[str]
) -> dict[tuple[str, tuple], float]:
    """Every server process's metrics summed series by series (several workers: each on its
    internal port; the public one reaches a worker at random)."""
    total: dict[tuple[str, tuple], float] = {}
    for base in bases:
        for key, value in (await scrape(http, base)).items():
            total[key] = total.get(key, 0.0) + value
    return total


async def scrape(http: aiohttp.ClientSession, base: str) -> dict[tuple[str, tuple], float]:
    async with http.get(base + "/metrics") as r:
        text = await r.text()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def quantile_from_buckets(
    before: dict, after: dict, name: str, q: float, **labels: str
) -> float | None:
    """histogram_quantile() over the increase between two scrapes (linear within a bucket)."""
    rows = []
    for (metric, lab), value in after.items():
        d = dict(lab)
        if metric != name + "_bucket" or any(d.get(k) != v for k, v in labels.items()):
            continue
        le = float("inf") if d["le"] == "+Inf" else float(d["le"])
        rows.append((le, value - before.get((metric, lab), 0.0)))
    rows.sort()
    if not rows or rows[-1][1] <= 0:
        return None
    rank = q * rows[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for le, count in rows:
        if count >= rank:
            if le == float("inf"):
                return prev_le
            span = count - prev_count
            return prev_le + (le - prev_le) * ((rank - prev_count) / span if span else 1.0)
        prev_le, prev_count = le, count
    return None


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


SIM_ECHO_DELAY = 0.0
"""The sim engine's echo delay in the bench. Not its 0.3 s default: that delay line plays up to
60 ms early and trims itself, so subtracting it from the click's round trip left ±60 ms of
doubt (a first run gave -19 ms). At 0 the sim echoes each frame on its next 20 ms tick, and
the click's round trip is both ways through the bridge plus at most one tick."""
BRIDGES = ("bridge", "cloudapi", "cloudapi-transcoded", "cloudapi-sip-sdes", "zuckzapgo")
"""The targets that are the bridge (scraped for its own histograms)."""
CLOUDAPI = ("cloudapi", "cloudapi-transcoded")
"""The Cloud API targets on Graph + DTLS: with Opus pass-through (the default), and with it off
(``BRIDGE_OPUS_PASSTHROUGH=false``: every packet decoded and encoded again)."""
SIP_SDES = "cloudapi-sip-sdes"
"""The Cloud API on Meta's SIP road with SDES-SRTP media, pass-through on: the bridge's
INVITEs go to ``bench/sip_meta.py`` (on CPU 1), which echoes the bridge's SRTP re-keyed."""
META_TOKEN, META_PNID, META_SECRET = "bench-token", "1098765432", "bench-secret"
PCM_ENGINE = "zuckzapgo"
"""A remote PCM engine: the bridge's ZuckZapGo engine against ``bench/zuckzapgo_echo.py``."""
PCM_ENGINE_TOKEN = "bench-ztok"
SETTLE = 1.0
"""Seconds a server is left alone after it starts (before its idle RSS is read) and after
each point (its calls' teardown out of the next point's CPU); ``--smoke`` judges no figure
and waits none."""


async def start_meta(
    port: int, bridge_port: int, network: Sequence[str] = ()
) -> asyncio.subprocess.Process:
    """The Meta stand-in of the ``cloudapi`` target, on the load generator's CPU; ``network``:
    its path's arguments (``bench.meta``'s ``--jitter-ms``, ``--loss``, ``--drift-ppm``,
    ``--seed``; clean without)."""
    argv = [
        sys.executable,
        "-m",
        "bench.meta",
        "--port",
        str(port),
        "--bridge",
        f"http://127.0.0.1:{bridge_port}",
        "--token",
        META_TOKEN,
        "--phone-number-id",
        META_PNID,
        "--app-secret",
        META_SECRET,
        *network,
    ]
    proc = await asyncio.create_subprocess_exec(*pinned(1, argv), cwd=ROOT)
    await until_healthy(port, "the Meta stand-in")
    return proc


async def until_healthy(port: int, what: str) -> None:
    """Wait (up to 30 s) for ``GET /healthz`` on ``port`` to answer 200."""
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            try:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{what} did not start")


async def start_pcm_engine(
    port: int, timing: list[str] | None = None
) -> asyncio.subprocess.Process:
    """The echoing ZuckZapGo of the ``zuckzapgo`` target, on the load generator's CPU;
    ``timing``: its ``--kind``/``--phase``/``--ppm`` arguments (by default a clock at a
    random phase, ``bench/zuckzapgo_echo.py``)."""
    argv = [sys.executable, "-m", "bench.zuckzapgo_echo", "--port", str(port), *(timing or [])]
    return await start_stand_in([*argv, "--token", PCM_ENGINE_TOKEN], "the echoing ZuckZapGo")


async def start_stand_in(argv: list[str], what: str) -> asyncio.subprocess.Process:
    """A far end of the bench (``argv``), pinned to CPU 1, once it printed ``READY``."""
    proc = await asyncio.create_subprocess_exec(
        *pinned(1, argv), cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    if not line.startswith(b"READY"):
        raise RuntimeError(f"{what} did not start")
    return proc


async def start_sip_meta(port: int, certs: Path) -> asyncio.subprocess.Process:
    """The SIP + SDES Meta stand-in of the ``cloudapi-sip-sdes`` target, on CPU 1; its
    certificate and the bridge's from a throwaway CA in ``certs``."""
    from tests.support.tls import TestCA

    ca = TestCA(certs)
    pair = ca.issue("meta", "127.0.0.1", "localhost")
    ca.issue("bridge", "127.0.0.1", "localhost")
    argv = [sys.executable, "-m", "bench.sip_meta", "--port", str(port)]
    argv += ["--cert", str(pair.cert), "--key", str(pair.key)]
    return await start_stand_in(argv, "the SIP Meta stand-in")


def sip_env(meta_port: int, certs: Path) -> dict[str, str]:
    """The bridge's settings on Meta's SIP road with SDES media (certificates from
    :func:`start_sip_meta`), Opus pass-through on."""
    return {
        "BRIDGE_ENGINE": "cloudapi",
        "BRIDGE_CLOUDAPI_SIGNALLING": "sip",
        "BRIDGE_CLOUDAPI_MEDIA": "sdes",
        "BRIDGE_OPUS_PASSTHROUGH": "true",
        "BRIDGE_SIP_LISTEN": f"127.0.0.1:{free_port()}",
        "BRIDGE_SIP_HOSTNAME": "localhost",
        "BRIDGE_SIP_CERT": str(certs / "bridge.pem"),
        "BRIDGE_SIP_KEY": str(certs / "bridge.key"),
        "BRIDGE_SIP_NUMBER": "15550009999",
        "BRIDGE_SIP_META_URI": f"sip:127.0.0.1:{meta_port};transport=tls",
        "BRIDGE_SIP_CA": str(certs / "ca.pem"),
    }


async def start_profiler(pid: int, seconds: float, out: Path) -> asyncio.subprocess.Process:
    """py-spy sampling the server over the window, on the generator's CPU.

    ``--nonblocking``: py-spy reads the server's memory without stopping it, so the profile
    does not slow down the loop it measures; the price is an occasional torn stack. (py-spy's
    ``--native``, which would show the C frames, must stop the process at every sample: with
    30 calls that made 99 % of the frames late, so C time shows under the Python line that
    called it.) Raw (collapsed) stacks: one line per distinct stack with its sample count, for
    ``python -m bench.profile`` or flamegraph.pl.
    """
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise RuntimeError("--profile needs py-spy (pip install py-spy)")
    # A second short of the window: the calls' teardown after it is not the per-packet cost.
    argv = [spy, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds) - 1))]
    argv += ["--nonblocking", "--rate", "200", "--format", "raw", "--output", str(out)]
    return await asyncio.create_subprocess_exec(
        *pinned(1, argv), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )


async def stop(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), 15)
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def start_server(
    target: str,
    port: int,
    meta_port: int = 0,
    loop: str = "uvloop",
    cluster: dict[str, str] | None = None,
    certs: Path | None = None,
) -> asyncio.subprocess.Process:
    """The server under test; ``cluster`` (BRIDGE_WORKERS and its directory settings) runs
    the bridge as several workers, on every CPU (no pinning: they are the machine's)."""
    env = dict(
        os.environ,
        BRIDGE_ICE_ADDRESSES="127.0.0.1",
        BRIDGE_STUN_URLS="",
        BRIDGE_MAX_CALLS="2000",
        BRIDGE_SIM_ANSWER_DELAY="0.05",
        BRIDGE_SIM_ECHO_DELAY=str(SIM_ECHO_DELAY),
        BRIDGE_LOG_LEVEL="warning",
        BRIDGE_STATS_INTERVAL="5",
        # One load generator places every call: lift the per-client rate limit.
        BRIDGE_RATE_LIMIT="10000",
        BRIDGE_RATE_BURST="10000",
        BRIDGE_UVLOOP="true" if loop == "uvloop" else "false",
    )
    if target in CLOUDAPI:
        env.update(
            BRIDGE_OPUS_PASSTHROUGH="true" if target == "cloudapi" else "false",
            BRIDGE_ENGINE="cloudapi",
            BRIDGE_ENGINE_URL=f"http://127.0.0.1:{meta_port}/v23.0",
            BRIDGE_ENGINE_TOKEN=META_TOKEN,
            BRIDGE_CLOUDAPI_PHONE_NUMBER_ID=META_PNID,
            BRIDGE_CLOUDAPI_APP_SECRET=META_SECRET,
            BRIDGE_CLOUDAPI_VERIFY_TOKEN="bench-verify",
        )
    if target == SIP_SDES:
        assert certs is not None
        env.update(sip_env(meta_port, certs))
    if target == PCM_ENGINE:
        env.update(
            BRIDGE_ENGINE="zuckzapgo",
            BRIDGE_ENGINE_URL=f"http://127.0.0.1:{meta_port}",
            BRIDGE_ENGINE_TOKEN=PCM_ENGINE_TOKEN,
            BRIDGE_ENGINE_POLL_INTERVAL="0.2",
        )
    if cluster:
        env.update(cluster)
    if target in BRIDGES:
        argv = [sys.executable, "-m", "bridge", "--port", str(port)]
    else:
        argv = [sys.executable, "-m", "bench.echo_server", "--port", str(port)]
    proc = await asyncio.create_subprocess_exec(
        *(argv if cluster else pinned(0, argv)),
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
    )
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            try:
                async with http.post(
                    f"http://127.0.0.1:{port}/call/make", json={"phone": "5521999999999"}
                ) as r:
                    if r.status == 201:
                        call = await r.json()
                        # The probe call must not linger through the measured points.
                        async with http.post(
                            f"http://127.0.0.1:{port}/call/hangup", json={"callID": call["callID"]}
                        ):
                            pass
                        return proc
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{target} did not start")


async def forwarding(http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    """Whether the live Cloud API calls forward Opus untouched (pass-through) both ways: the
    share of the frames sent to the browsers, and to WhatsApp, that were forwarded (all calls
    together, since each call's start)."""
    async with http.get(base + "/call/status") as r:
        calls = (await r.json())["calls"]
    down = [0, 0]
    up = [0, 0]
    for call in calls:
        async with http.get(f"{base}/call/{call['callID']}/stats") as r:
            stats = await r.json()
        webrtc = stats.get("webrtc") or {}
        leg = (stats.get("leg") or {}).get("webrtc") or {}  # the WhatsApp leg's own numbers
        down[0] += webrtc.get("downlinkForwarded", 0)
        # The browser's frames, decoded or only counted (an idle leg): as many as it gets.
        down[1] += webrtc.get("uplinkFrames", 0) + webrtc.get("uplinkNotDecoded", 0)
        up[0] += leg.get("framesForwarded", 0)
        up[1] += leg.get("framesSent", 0)
    return {
        "forwarded_to_browser": round(down[0] / max(1, down[1]), 3),
        "forwarded_to_whatsapp": round(up[0] / max(1, up[1]), 3),
    }


async def engine_sinks(http: aiohttp.ClientSession, base: str) -> dict[str, int]:
    """What the live calls' downlink sinks did to follow a remote engine's clock and jitter
    (summed over the calls, since each call's start): a delay that holds no more than 60 ms
    bursts need must not be paid for in concealed underruns."""
    async with http.get(base + "/call/status") as r:
        calls = (await r.json())["calls"]
    total: Counter[str] = Counter()
    for call in calls:
        async with http.get(f"{base}/call/{call['callID']}/stats") as r:
            sink = ((await r.json()).get("webrtc") or {}).get("jitterBuffer") or {}
        for key in ("underruns", "concealedUnderruns", "latencyDrops", "played"):
            total[key] += sink.get(key, 0)
        total["inserted"] += sink.get("insertedSamplesForDeceleration", 0)
        total["removed"] += sink.get("removedSamplesForAcceleration", 0)
        total["one_frame_held"] += sink.get("cushionFrames") == 1
    return dict(total)


async def run_point(
    target: str,
    proc: asyncio.subprocess.Process,
    base: str,
    calls: int,
    warmup: float,
    window: float,
    idle_rss: int,
    meta: tuple[str, int] | None = None,
    participants: int = 1,
    profile: Path | None = None,
    report_every: float = 0.0,
    metric_bases: list[str] | None = None,
    pin: bool = True,
    audio: str = "tone",
    settle: float = SETTLE,
) -> dict[str, Any]:
    argv = [
        sys.executable,
        "-m",
        "bench.loadgen",
        "--base",
        base,
        "--calls",
        str(calls),
        "--warmup",
        str(warmup),
        "--window",
        str(window),
    ]
    if target in BRIDGES:
        # The calls' stats are read at the window's end (forwarding, the engine's sinks):
        # the generator keeps the calls up until told, then hangs them up.
        argv += ["--hangup", "--hold"]
    if audio == "tone":  # the probe times an echo (the sim's, the echo server's, Meta's)
        argv.append("--click")
    if audio != "tone":
        argv += ["--audio", audio]
    if report_every:
        argv += ["--report-every", str(report_every)]
    if participants > 1:
        argv += ["--participants", str(participants)]
    errors = tempfile.TemporaryFile()
    gen = await asyncio.create_subprocess_exec(
        *(pinned(1, argv) if pin else argv),
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=errors,
    )
    assert gen.stdout is not None and gen.stdin is not None
    point: dict[str, Any] = {
        "target": target,
        "calls": calls,
        "participants": participants,
        "audio": audio,
    }
    meta_base, meta_pid = meta if meta else ("", 0)

    def generator_cpu() -> float:
        """CPU seconds of the load generator (and of the Meta stand-in beside it)."""
        return cpu_seconds(gen.pid) + (cpu_seconds(meta_pid) if meta_pid else 0.0)

    spy: asyncio.subprocess.Process | None = None
    timeline: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as http:
        m0 = m1 = {}
        c0 = c1 = g0 = g1 = t0 = 0.0
        c_last = 0.0
        while True:
            line = (await gen.stdout.readline()).decode().strip()
            if not line:
                break
            if line.startswith("WINDOW_START"):
                if profile is not None:
                    spy = await start_profiler(proc.pid, window, profile)
                c0, g0 = tree_cpu_seconds(proc.pid), generator_cpu()
                t0 = float(line.split()[1])
                c_last = c0
                if target in BRIDGES:
                    m0 = await scrape_all(http, metric_bases or [base])
            elif line.startswith("WINDOW_END"):
                c1, g1 = tree_cpu_seconds(proc.pid), generator_cpu()
                point["rss_bytes"] = tree_rss_bytes(proc.pid)
                point["fds"] = tree_fds(proc.pid)
                # The machine is shared: the 1-minute load says what else wanted the CPUs.
                point["load_1m"] = os.getloadavg()[0]
                if target in BRIDGES:
                    m1 = await scrape_all(http, metric_bases or [base])
                if target in (*CLOUDAPI, SIP_SDES):
                    point.update(await forwarding(http, base))
                if target == PCM_ENGINE:
                    point["engine_sinks"] = await engine_sinks(http, base)
                if meta_base:  # what the WhatsApp side heard, before the calls are hung up
                    q = {"t0": str(t0), "t1": line.split()[1]}
                    async with http.get(meta_base + "/bench/stats", params=q) as r:
                        heard = await r.json()
                    point["whatsapp_on_time"] = heard["uplink_on_time"]
                    point["whatsapp_heard_per_call"] = heard["uplink_heard_per_call"]
                    point["whatsapp_connected"] = heard["connected"]
                    point["meta_refused"] = heard["refused"]
                if target in BRIDGES:  # read what we need (--hold): the generator goes on
                    gen.stdin.write(b"hang up\n")
                    await gen.stdin.drain()
            elif line.startswith("REPORT"):
                report = json.loads(line.split(" ", 1)[1])
                c = tree_cpu_seconds(proc.pid)
                span = report["t1"] - report["t0"]
                row = {
                    "t_s": round(report["t1"] - t0, 1),
                    "on_time": report["on_time"],
                    "cpu_pct": 100 * (c - c_last) / span if span > 0 else 0.0,
                    "rss_mb": tree_rss_bytes(proc.pid) / 1e6,
                    "fds": tree_fds(proc.pid),
                    "click_rtt_ms": report["click_rtt_ms"],
                    "load_1m": os.getloadavg()[0],
                }
                c_last = c
                timeline.append(row)
                print(
                    f"  t={row['t_s']:6.0f}s  on-time={100 * row['on_time']:6.2f}%  "
                    f"cpu={row['cpu_pct']:5.1f}%  rss={row['rss_mb']:6.1f} MB  fds={row['fds']}  "
                    f"click={row['click_rtt_ms'][-1:] or '-'} ms  load={row['load_1m']:.1f}",
                    flush=True,
                )
            elif line.startswith("{"):
                point.update(json.loads(line))
        await gen.wait()
        if spy is not None:
            await spy.wait()
            point["profile"] = str(profile)
        if "connected" not in point:
            errors.seek(0)
            tail = errors.read().decode(errors="replace")[:3000]
            raise RuntimeError(f"the load generator failed at N={calls}:\n{tail}")
        errors.close()
        window_s = point.get("window_s", window)
        cpu = (c1 - c0) / window_s
        point["server_cpu_pct"] = 100 * cpu
        # Near 100 %: the generator side (CPU 1) is saturated, and lateness is partly its own.
        point["generator_cpu_pct"] = 100 * (g1 - g0) / window_s
        point["cpu_pct_per_call"] = 100 * cpu / calls
        point["rss_per_call_bytes"] = (point.get("rss_bytes", idle_rss) - idle_rss) / calls
        if timeline:
            point["timeline"] = timeline
        # The click's round trip from outside: RTP send to RTP arrival at the load generator,
        # through the server both ways and the far end's echo (for the sim, minus its delay).
        clicks = point.pop("click_rtt_s", [])
        if clicks:
            echo_delay = SIM_ECHO_DELAY if target == "bridge" else 0.0
            point["clicks"] = len(clicks)
            for q in (0.5, 0.99):
                rtt = percentile(clicks, q) or 0.0
                point[f"click_rtt_p{int(q * 100)}_ms"] = 1000 * rtt
                point[f"click_added_p{int(q * 100)}_ms"] = 1000 * (rtt - echo_delay)
        offers = point.pop("offer_to_answer_s", [])
        point["offer_to_answer_p50_ms"] = 1000 * (percentile(offers, 0.5) or 0)
        point["offer_to_answer_p99_ms"] = 1000 * (percentile(offers, 0.99) or 0)
        for key in ("window_t0", "window_t1"):  # only used to ask the Meta stand-in
            point.pop(key, None)
        if target in BRIDGES and m0 and m1:
            frames = 0.0
            for d in ("uplink", "downlink"):
                # The PCM frames the bus carried: none either way on a call forwarded both
                # ways with nothing reading its audio (an idle leg decodes nothing).
                frames += delta(m0, m1, "bridge_bus_frames_total", direction=d)
                point[f"bus_{d}_frames_per_call"] = (
                    delta(m0, m1, "bridge_bus_frames_total", direction=d) / calls
                )
                for q in (0.5, 0.99):
                    v = quantile_from_buckets(
                        m0, m1, "bridge_frame_transit_seconds", q, direction=d
                    )
                    point[f"{d}_latency_p{int(q * 100)}_ms"] = None if v is None else 1000 * v
            # CPU per 20 ms frame carried (either direction): unlike CPU per call, it does not
            # fall when a starved bridge (other work on its core) carries fewer frames.
            if frames:
                point["cpu_us_per_frame"] = 1e6 * (c1 - c0) / frames
            # The browser's adaptive jitter buffer grows after an underrun (late arrivals from
            # the engine side): these explain a high downlink latency.
            point["jitter_underruns_per_call"] = (
                delta(m0, m1, "bridge_jitter_buffer_underruns_total") / calls
            )
            point["jitter_depth_frames_per_call"] = (
                m1.get(("bridge_jitter_buffer_depth_frames", ()), 0.0) / calls
            )
            point["loop_lag_p99_ms"] = 1000 * (
                quantile_from_buckets(m0, m1, "bridge_event_loop_lag_seconds", 0.99) or 0
            )
            # Ticks the bridge's media clock passed over in its stalls during the window: a
            # frame each that no clocked track sent (a starved bridge, on a loaded host).
            point["clock_skipped_ticks"] = delta(m0, m1, "bridge_media_clock_skipped_ticks_total")
            # wait until the bridge has torn the calls down
            for _ in range(100):
                async with http.get(base + "/call/status") as r:
                    if not (await r.json())["calls"]:
                        break
                await asyncio.sleep(0.1)
    await asyncio.sleep(settle)
    return point


async def bench(
    calls_list: list[int],
    warmup: float,
    window: float,
    targets: list[str],
    participants_list: tuple[int, ...] = (1,),
    profile_dir: Path | None = None,
    loops: tuple[str, ...] = ("uvloop",),
    workers_list: tuple[int, ...] = (1,),
    audios: tuple[str, ...] = ("tone",),
    rounds: int = 1,
    settle: float = SETTLE,
) -> dict[str, Any]:
    load_at_start = os.getloadavg()  # the machine is shared: say how busy it was
    points = []
    # The bridge once per event loop asked for (back to back, so they share the machine's
    # conditions); the echo server always runs on asyncio's loop. --workers runs the sim
    # bridge once per worker count too.
    runs = [
        (t, loop, w)
        for t in targets
        for loop in (loops if t in BRIDGES else ("asyncio",))
        for w in (workers_list if t == "bridge" else (1,))
    ]
    # --rounds: the whole list again, so each ratio pairs points measured next to each other.
    for round_, (target, loop, workers) in ((r, run) for r in range(rounds) for run in runs):
        port = free_port()
        meta = None
        meta_at: tuple[str, int] | None = None
        redis = None
        cluster: dict[str, str] | None = None
        metric_bases: list[str] | None = None
        certs: Path | None = None
        meta_port = 0
        if target in CLOUDAPI:
            meta_port = free_port()
            meta = await start_meta(meta_port, port)
            meta_at = (f"http://127.0.0.1:{meta_port}", meta.pid)
        elif target == SIP_SDES:
            certs = Path(tempfile.mkdtemp(prefix="bench-sip-"))
            meta_port = free_port()
            meta = await start_sip_meta(meta_port, certs)
        elif target == PCM_ENGINE:
            meta_port = free_port()
            meta = await start_pcm_engine(meta_port)
        if workers > 1:
            # Several workers share a Redis call directory; each serves its metrics on its
            # internal port (the public one reaches a worker at random).
            redis_port, internal_port = free_port(), free_port()
            redis = await start_redis(redis_port)
            cluster = worker_env(workers, redis_port, internal_port)
            metric_bases = [f"http://127.0.0.1:{internal_port + i}" for i in range(workers)]
        try:
            proc = await start_server(target, port, meta_port, loop, cluster, certs)
            base = f"http://127.0.0.1:{port}"
            await asyncio.sleep(settle)
            idle_rss = tree_rss_bytes(proc.pid)
            try:
                for n in calls_list:
                    # Each N's plain and contact-centre points run back to back (same
                    # machine conditions); the echo server knows nothing of participants.
                    points_of_n = [
                        (seats, audio)
                        for seats in (participants_list if target == "bridge" else (1,))
                        for audio in (audios if target == "bridge" else ("tone",))
                    ]
                    for seats, audio in points_of_n:
                        profile = None
                        if profile_dir is not None:
                            profile_dir.mkdir(parents=True, exist_ok=True)
                            name = f"{target}-{loop}-N{n}-p{seats}-{audio}-r{round_}.txt"
                            profile = profile_dir / name
                        point = await run_point(
                            target,
                            proc,
                            base,
                            n,
                            warmup,
                            window,
                            idle_rss,
                            meta_at,
                            seats,
                            profile,
                            metric_bases=metric_bases,
                            # With workers the server has every CPU, and the load generator
                            # shares them (a 2-core machine has none to give it).
                            pin=workers == 1 and len(workers_list) == 1,
                            audio=audio,
                            settle=settle,
                        )
                        point["loop"] = loop
                        point["workers"] = workers
                        point["round"] = round_
                        points.append(point)
                        print(
                            f"  {target:8} {loop:7} W={workers} N={n:3} participants={seats} "
                            f"audio={audio}  "
                            f"cpu/call={point['cpu_pct_per_call']:.2f}%  "
                            f"on-time={100 * point.get('downlink_on_time', 0):.2f}%",
                            flush=True,
                        )
            finally:
                await stop(proc)
        finally:
            if meta is not None:
                await stop(meta)
            if redis is not None:
                await stop(redis)
    result = summarize(points, calls_list, warmup, window, participants_list)
    result["load_at_start"] = load_at_start
    result["medians"] = medians(points)
    return result


def medians(points: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each ratio's median over the rounds, per N (``--rounds``: this VM's host changes speed
    by a third from one minute to the next, and a ratio of two points measured back to back
    carries over where either point alone does not)."""
    out: dict[str, dict[str, float]] = {}
    for key in ("ratio_vs_echo", "ratio_vs_tone"):
        by_n: dict[int, list[float]] = {}
        for p in points:
            if key in p and p["target"] == "bridge" and p.get("workers", 1) == 1:
                by_n.setdefault(p["calls"], []).append(p[key])
        if by_n:
            out[key] = {str(n): round(statistics.median(v), 3) for n, v in sorted(by_n.items())}
    return out


def summarize(
    points: list[dict[str, Any]],
    calls_list: list[int],
    warmup: float,
    window: float,
    participants_list: tuple[int, ...] = (1,),
) -> dict[str, Any]:
    # The ratio is only meaningful where the echo server kept up: a saturated server's CPU per
    # call is just 100 % / N.
    echo = {
        (p["calls"], p.get("round", 0)): p
        for p in points
        if p["target"] == "echo" and p.get("downlink_on_time", 0) >= 0.995
    }
    for p in points:
        if (
            p["target"] in BRIDGES
            and p.get("participants", 1) == 1
            and p.get("audio", "tone") == "tone"
            and (p["calls"], p.get("round", 0)) in echo
            and echo[p["calls"], p.get("round", 0)]["cpu_pct_per_call"]
        ):
            bare = echo[p["calls"], p.get("round", 0)]
            p["ratio_vs_echo"] = p["cpu_pct_per_call"] / bare["cpu_pct_per_call"]
    # A contact-centre call's cost next to a plain call's, same run, same N.
    plain = {
        (p["calls"], p.get("loop"), p.get("round", 0)): p
        for p in points
        if p["target"] == "bridge"
        and p.get("participants", 1) == 1
        and p.get("audio", "tone") == "tone"
    }
    for p in points:
        base = plain.get((p["calls"], p.get("loop"), p.get("round", 0)))
        if p.get("audio", "tone") != "tone":  # nobody speaking next to the tone both ways
            tone = next(
                (
                    q
                    for q in points
                    if q["target"] == p["target"]
                    and q.get("audio", "tone") == "tone"
                    and (q["calls"], q.get("loop"), q.get("participants", 1), q.get("round", 0))
                    == (p["calls"], p.get("loop"), p.get("participants", 1), p.get("round", 0))
                ),
                None,
            )
            if tone is not None and tone["cpu_pct_per_call"]:
                p["ratio_vs_tone"] = p["cpu_pct_per_call"] / tone["cpu_pct_per_call"]
            continue
        if p["target"] == "bridge" and p.get("participants", 1) > 1 and base:
            if base["cpu_pct_per_call"]:
                p["ratio_vs_1_participant"] = p["cpu_pct_per_call"] / base["cpu_pct_per_call"]

    # Several workers next to one, same N, same run: their CPU per call summed over every
    # worker, divided by one worker's (1.0: no cross-worker cost on the media path).
    single = {
        (p["calls"], p.get("loop"), p.get("round", 0)): p
        for p in points
        if p["target"] == "bridge" and p.get("workers", 1) == 1 and p.get("participants", 1) == 1
    }
    for p in points:
        one = single.get((p["calls"], p.get("loop"), p.get("round", 0)))
        if p.get("workers", 1) > 1 and one and one["cpu_pct_per_call"]:
            p["ratio_vs_1_worker"] = p["cpu_pct_per_call"] / one["cpu_pct_per_call"]

    def best(target: str, loop: str, workers: int) -> int:
        ok = [
            p["calls"]
            for p in points
            if p["target"] == target
            and p.get("loop") == loop
            and p.get("workers", 1) == workers
            and p.get("participants", 1) == 1
            and p.get("audio", "tone") == "tone"
            and p.get("downlink_on_time", 0) >= 0.995
            and p.get("connected") == p["calls"]
        ]
        return max(ok) if ok else 0

    runs = list(
        dict.fromkeys((p["target"], p.get("loop", ""), p.get("workers", 1)) for p in points)
    )
    loops_of = Counter(t for t, _ in dict.fromkeys((t, loop) for t, loop, _ in runs))

    def label(target: str, loop: str, workers: int) -> str:
        name = target if loops_of[target] == 1 else f"{target}/{loop}"
        return name if workers == 1 else f"{name}/{workers} workers"

    return {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "pinned": bool(TASKSET),
        },
        "settings": {
            "calls": calls_list,
            "loops": sorted({p.get("loop", "") for p in points if p["target"] in BRIDGES}),
            "participants": list(participants_list),
            "warmup_s": warmup,
            "window_s": window,
        },
        "load_at_end": os.getloadavg(),
        "points": points,
        "max_calls_on_time": {label(t, loop, w): best(t, loop, w) for t, loop, w in runs},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def pair(p: dict[str, Any], key: str) -> str:
    """``p50/p99`` of a latency, in ms."""
    a, b = p.get(f"{key}_p50_ms"), p.get(f"{key}_p99_ms")
    return f"{'-' if a is None else f'{a:.1f}'}/{'-' if b is None else f'{b:.1f}'}"


def table(result: dict[str, Any]) -> str:
    head = (
        "target",
        "loop",
        "W",
        "N",
        "seats",
        "audio",
        "cpu%/call",
        "µs/frame",
        "gen cpu%",
        "ratio",
        "on-time%",
        "wa on-time%",
        "bus up fr/call",
        "bus down fr/call",
        "up p50/p99 ms",
        "down p50/p99 ms",
        "click p50/p99 ms",
        "jb under/depth",
        "offer p50/p99 ms",
        "RSS/call MB",
        "load",
    )
    rows = [head]

    def f(v: Any, fmt: str = "{:.2f}") -> str:
        return "-" if v is None else fmt.format(v)

    for p in result["points"]:
        rows.append(
            (
                p["target"],
                p.get("loop", "-"),
                str(p.get("workers", 1)),
                str(p["calls"]),
                str(p.get("participants", 1)),
                p.get("audio", "tone"),
                f(p["cpu_pct_per_call"]),
                f(p.get("cpu_us_per_frame"), "{:.0f}"),
                f(p.get("generator_cpu_pct"), "{:.0f}"),
                f(
                    p.get("ratio_vs_tone")
                    or p.get(
                        "ratio_vs_echo", p.get("ratio_vs_1_participant", p.get("ratio_vs_1_worker"))
                    )
                ),
                f(100 * p.get("downlink_on_time", 0)),
                f(None if "whatsapp_on_time" not in p else 100 * p["whatsapp_on_time"]),
                f(p.get("bus_uplink_frames_per_call"), "{:.0f}"),
                f(p.get("bus_downlink_frames_per_call"), "{:.0f}"),
                pair(p, "uplink_latency"),
                pair(p, "downlink_latency"),
                pair(p, "click_added"),
                f(p.get("jitter_underruns_per_call"), "{:.1f}")
                + "/"
                + f(p.get("jitter_depth_frames_per_call"), "{:.1f}"),
                f"{p['offer_to_answer_p50_ms']:.0f}/{p['offer_to_answer_p99_ms']:.0f}",
                f(p["rss_per_call_bytes"] / 1e6),
                f(p.get("load_1m"), "{:.1f}"),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.append(
        "largest N with >= 99.5 % of frames on time: "
        + ", ".join(f"{k} {v}" for k, v in result["max_calls_on_time"].items())
    )
    if any(p.get("participants", 1) > 1 for p in result["points"]):
        lines.append(
            "ratio: bridge/echo for 1 seat; for more seats, CPU per call / the 1-seat call's"
        )
    if any(p.get("audio", "tone") != "tone" for p in result["points"]):
        lines.append("ratio of a silence point: its CPU per call / the tone point's (same N)")
    if any(p.get("workers", 1) > 1 for p in result["points"]):
        lines.append(
            "W: worker processes (BRIDGE_WORKERS, on every CPU, the load generator sharing them); "
            "for W > 1, cpu%/call sums every worker and ratio is it / 1 worker's at the same N"
        )
    lines.append(
        "click: one call's click timed from outside (RTP sent → its echo's RTP back at the load "
        f"generator; the sim echoes after {SIM_ECHO_DELAY:g} s + <= 20 ms), so both ways through "
        "the server; up/down: the bridge's own frame-transit histograms"
    )
    return "\n".join(lines)


def soak_summary(point: dict[str, Any]) -> dict[str, Any]:
    """Is it flat? RSS and fd growth over the run and the worst interval's on-time share."""
    rows = point.get("timeline", [])
    if len(rows) < 2:
        return {}
    t = [r["t_s"] for r in rows]
    rss = [r["rss_mb"] for r in rows]
    half = len(rows) // 2  # the slope over the second half: past start-up's allocations
    span = t[-1] - t[half] if len(rows) > 2 else t[-1] - t[0]
    base = rss[half] if len(rows) > 2 else rss[0]
    return {
        "minutes": round(t[-1] / 60, 1),
        "rss_mb_first": rss[0],
        "rss_mb_last": rss[-1],
        "rss_mb_per_min_second_half": 60 * (rss[-1] - base) / span if span > 0 else 0.0,
        "fds_first": rows[0]["fds"],
        "fds_last": rows[-1]["fds"],
        "on_time_min": min(r["on_time"] for r in rows),
        "on_time_window": point.get("downlink_on_time", 0.0),
        "cpu_pct_per_call": point.get("cpu_pct_per_call"),
        "click_rtt_p50_ms": point.get("click_rtt_p50_ms"),
    }


async def soak(minutes: float, calls: int, report_every: float, loop: str) -> dict[str, Any]:
    """N calls for ``minutes`` on the bridge (sim engine), one timeline row per interval."""
    load_at_start = os.getloadavg()
    port = free_port()
    proc = await start_server("bridge", port, 0, loop)
    base = f"http://127.0.0.1:{port}"
    try:
        await asyncio.sleep(1.0)
        idle_rss = tree_rss_bytes(proc.pid)
        point = await run_point(
            "bridge", proc, base, calls, 3.0, 60 * minutes, idle_rss, report_every=report_every
        )
        point["loop"] = loop
    finally:
        await stop(proc)
    result = summarize([point], [calls], 3.0, 60 * minutes)
    result["load_at_start"] = load_at_start
    result["soak"] = soak_summary(point)
    return result


def plot(result: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    series = sorted({(p["target"], p.get("participants", 1)) for p in result["points"]})
    for target, seats in series:
        pts = [
            p
            for p in result["points"]
            if p["target"] == target and p.get("participants", 1) == seats
        ]
        label = target if seats == 1 else f"{target}, {seats} participants"
        a.plot([p["calls"] for p in pts], [p["cpu_pct_per_call"] for p in pts], "o-", label=label)
    a.set_xlabel("concurrent two-way calls")
    a.set_ylabel("server CPU % of a core per call")
    a.set_title("CPU per call")
    a.legend()
    a.grid(alpha=0.3)
    for target in BRIDGES:
        pts = [
            p for p in result["points"] if p["target"] == target and p.get("participants", 1) == 1
        ]
        if not pts:
            continue
        for key, label in (
            ("uplink_latency_p50_ms", "uplink p50"),
            ("uplink_latency_p99_ms", "uplink p99"),
            ("downlink_latency_p50_ms", "downlink p50"),
            ("downlink_latency_p99_ms", "downlink p99"),
        ):
            b.plot(
                [p["calls"] for p in pts],
                [p.get(key) or 0 for p in pts],
                "o-" if target == "bridge" else "s--",
                label=f"{target} {label}",
            )
    b.set_xlabel("concurrent two-way calls")
    b.set_ylabel("ms inside the bridge")
    b.set_title("bridge-added latency")
    b.legend()
    b.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--calls", help="comma-separated N values (default 1,10,20,30,40; --soak: 20)"
    )
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument(
        "--targets",
        default="bridge,cloudapi,echo",
        help="of bridge (sim), cloudapi, cloudapi-transcoded, cloudapi-sip-sdes, zuckzapgo, echo",
    )
    parser.add_argument(
        "--participants",
        default="1",
        help="comma-separated peer connections per bridge call: 1 = plain, 3 = agent + whisper "
        "+ barge (e.g. 1,3 measures both in one run)",
    )
    parser.add_argument(
        "--uvloop",
        default="on",
        choices=("on", "off", "on,off", "off,on"),
        help="the bridge's event loop (BRIDGE_UVLOOP); on,off runs each bridge target on both, "
        "back to back, and reports both",
    )
    parser.add_argument(
        "--workers",
        default="1",
        help="comma-separated BRIDGE_WORKERS for the bridge (sim) target, e.g. 1,2: each count "
        "runs back to back, unpinned, with a loopback redis-server as the call directory",
    )
    parser.add_argument(
        "--audio",
        default="tone",
        choices=("tone", "silence", "tone,silence", "silence,tone"),
        help="what the bridge target's calls send: tone (speech both ways), silence (nobody "
        "speaking), or both back to back at each N (the silence/tone CPU ratio)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every target (and each N's points) this many times, alternating, and report "
        "each ratio's median over the rounds (each ratio pairs points of one round)",
    )
    parser.add_argument("--smoke", action="store_true", help="2 calls, 2 s: proves the bench runs")
    parser.add_argument(
        "--soak",
        type=float,
        metavar="MINUTES",
        help="instead of the sweep: N calls (--calls, default 20) on the bridge for MINUTES, "
        "reporting frames on time, CPU, RSS, fds and the click's round trip over time",
    )
    parser.add_argument(
        "--report-every", type=float, default=30.0, help="--soak: seconds between timeline rows"
    )
    parser.add_argument("--out", default=str(RESULTS))
    # Imported here: bench.engine_delay builds on this module's helpers.
    from bench import engine_delay, idle_legs

    engine_delay.add_arguments(parser, flag="--engine-delay")
    parser.add_argument(
        "--idle-legs",
        type=int,
        default=10,
        help="idle connected agent legs measured last (bench/idle_legs.py; 0 skips)",
    )
    parser.add_argument("--idle-legs-seconds", type=float, default=20.0)
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="sample the server with py-spy over each window; raw stacks go to DIR "
        "(keep them out of git; summarise with python -m bench.profile)",
    )
    args = parser.parse_args()
    loops = tuple("uvloop" if x == "on" else "asyncio" for x in args.uvloop.split(","))
    out = Path(args.out)
    if args.soak:
        n = int((args.calls or "20").split(",")[0])
        every = min(args.report_every, max(5.0, 60 * args.soak / 6))
        result = asyncio.run(soak(args.soak, n, every, loops[0]))
        out.mkdir(parents=True, exist_ok=True)
        path = out / (time.strftime("%Y%m%d-%H%M%S") + "-soak.json")
        path.write_text(json.dumps(result, indent=2))
        print(table(result))
        print("soak: " + json.dumps(result["soak"]))
        print(f"wrote {path}")
        return
    calls = [int(x) for x in (args.calls or "1,10,20,30,40").split(",")]
    warmup, window = args.warmup, args.window
    settle = SETTLE
    if args.smoke:  # nothing measured is judged: no pause to settle before or after a point
        calls, warmup, window, settle = [2], 1.5, 2.0, 0.0
    seats = tuple(int(x) for x in args.participants.split(","))
    profile_dir = Path(args.profile) if args.profile else None
    result = asyncio.run(
        bench(
            calls,
            warmup,
            window,
            args.targets.split(","),
            seats,
            profile_dir,
            loops,
            tuple(int(x) for x in args.workers.split(",")),
            tuple(args.audio.split(",")),
            args.rounds,
            settle,
        )
    )
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S") + ("-smoke" if args.smoke else "")
    (out / f"{stamp}.json").write_text(json.dumps(result, indent=2))
    plotted = plot(result, out / f"{stamp}.png")
    print(table(result))
    for key, by_n in result["medians"].items():
        print(f"median {key} over {args.rounds} round(s): " + json.dumps(by_n))
    print(f"wrote {out / (stamp + '.json')}" + (f" and {stamp}.png" if plotted else ""))
    if not args.smoke:  # the engine-delay part (bench/engine_delay.py), every engine kind
        engine_delay.run(args.engine_delay, args.engine_delay_rounds, args.engine_delay_seed, out)
        # The idle-legs part (bench/idle_legs.py): an always-connected agent leg between calls.
        idle_legs.run(args.idle_legs, args.idle_legs_seconds, out)


if __name__ == "__main__":
    main()
