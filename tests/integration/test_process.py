"""The real process: CLI errors, and SIGTERM with a live call closes everything cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time

import aiohttp
import pytest

from ..support.cluster import Http
from ..support.ports import free_port
from ..support.processes import spawn_bridge, wait_healthy
from ..support.rtc_client import RtcClient
from ..support.spectrum import dominant_frequency
from ..support.tls import TestCA


@pytest.mark.parametrize(
    ("args", "named"), [(["--port", "abc"], "--port"), (["--prot", "9000"], "--prot")]
)
async def test_bad_config_exits_2_with_one_line(args, named) -> None:
    """A bad value, or a flag that is none (a typo): the second printed argparse's whole usage,
    80 lines, above its error."""
    proc = await spawn_bridge(None, *args, stdout=asyncio.subprocess.PIPE)
    _out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and named in lines[0], lines


async def test_busy_port_exits_2_with_one_line(tmp_path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "BRIDGE_DATA_DIR": str(tmp_path), "BRIDGE_LOG_LEVEL": "error"}
        proc = await spawn_bridge(env, "--port", str(port), stdout=asyncio.subprocess.PIPE)
        _out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "in use" in lines[0], lines


async def test_a_worker_index_that_is_no_number_exits_2_with_one_line(tmp_path) -> None:
    """BRIDGE_WORKER_INDEX is the supervisor's, for its workers: set by hand to no number, it
    was int()'s ValueError traceback (exit 1)."""
    env = {**os.environ, "BRIDGE_DATA_DIR": str(tmp_path), "BRIDGE_WORKER_INDEX": "first"}
    proc = await spawn_bridge(env, "--port", str(free_port()), stdout=asyncio.subprocess.PIPE)
    _out, err = await asyncio.wait_for(proc.communicate(), 30)
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 2, lines
    assert len(lines) == 1 and "BRIDGE_WORKER_INDEX='first'" in lines[0], lines


async def test_a_host_it_cannot_listen_on_exits_2_with_one_line(tmp_path) -> None:
    """A BRIDGE_HOST that does not resolve was socket.gaierror's traceback (exit 1): only the
    errors of a busy port, a privileged one or an address not this machine's were said."""
    env = {**os.environ, "BRIDGE_DATA_DIR": str(tmp_path), "BRIDGE_LOG_LEVEL": "error"}
    env |= {"BRIDGE_HOST": "no-such-host.invalid", "BRIDGE_API_TOKENS": "t"}
    proc = await spawn_bridge(env, "--port", str(free_port()), stdout=asyncio.subprocess.PIPE)
    _out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and "no-such-host.invalid" in lines[0], lines
    assert "BRIDGE_HOST" in lines[0], lines


async def test_a_misspelled_setting_is_told_once_at_start(tmp_path) -> None:
    """BRIDGE_RECORD_AL (for BRIDGE_RECORD_ALL) set nothing and said nothing: the bridge ran
    with the default. It still runs, and says once which name is no setting and which one
    was likely meant."""
    env = {**os.environ, "BRIDGE_DATA_DIR": str(tmp_path), "BRIDGE_LOG_LEVEL": "info"}
    env |= {"BRIDGE_RECORD_AL": "true", "BRIDGE_API_TOKENS": "t"}
    proc = await spawn_bridge(env, "--port", str(free_port()))
    assert proc.stderr is not None
    lines: list[str] = []
    try:  # its log up to "starting on" (the start goes on: nothing more is needed of it)
        while not lines or "starting on http" not in lines[-1]:
            line = await asyncio.wait_for(proc.stderr.readline(), 30)
            assert line, lines  # the process ended
            lines.append(line.decode())
    finally:
        proc.kill()
        await proc.wait()
    told = [line for line in lines if "is no setting" in line]
    assert len(told) == 1 and "WARNING" in told[0], lines
    assert told[0].rstrip().endswith("BRIDGE_RECORD_AL is no setting (ignored): BRIDGE_RECORD_ALL?")


@pytest.mark.parametrize("bad", ["cert missing", "key not a key", "CA missing", "port taken"])
async def test_a_bad_sip_setting_exits_2_with_one_line_naming_it(tmp_path, bad) -> None:
    """Meta's SIP road checks its files and its port as its listener starts, after the
    settings parse: a certificate, key or CA file that does not load, or a port another
    process holds, was a traceback (exit 1) that named no setting."""
    pair = TestCA(tmp_path).issue("bridge", "localhost")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {
            **os.environ,
            "BRIDGE_DATA_DIR": str(tmp_path),
            "BRIDGE_LOG_LEVEL": "error",
            "BRIDGE_ENGINE": "cloudapi",
            "BRIDGE_CLOUDAPI_SIGNALLING": "sip",
            "BRIDGE_SIP_HOSTNAME": "localhost",
            "BRIDGE_SIP_NUMBER": "15550009999",
            "BRIDGE_SIP_CERT": str(pair.cert),
            "BRIDGE_SIP_KEY": str(pair.key),
            "BRIDGE_SIP_LISTEN": "127.0.0.1:0",
        }
        setting = {
            "cert missing": ("BRIDGE_SIP_CERT", str(tmp_path / "gone.pem")),
            "key not a key": ("BRIDGE_SIP_KEY", str(pair.cert)),
            "CA missing": ("BRIDGE_SIP_CA", str(tmp_path / "no-ca.pem")),
            "port taken": ("BRIDGE_SIP_LISTEN", f"127.0.0.1:{taken.getsockname()[1]}"),
        }[bad]
        env[setting[0]] = setting[1]
        proc = await spawn_bridge(env, "--port", str(free_port()), stdout=asyncio.subprocess.PIPE)
        _out, err = await asyncio.wait_for(proc.communicate(), 30)
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 2, lines
    assert len(lines) == 1 and setting[0] in lines[0] and setting[1] in lines[0], lines


@pytest.mark.parametrize(
    ("sig", "times"), [(signal.SIGTERM, 1), (signal.SIGINT, 1), (signal.SIGTERM, 3)]
)
async def test_signal_with_live_call_exits_cleanly(sig, times) -> None:
    """One signal, or the same three times 2 ms apart while it stops (``make`` passes on the
    SIGTERM it gets to the bridge, which got its own; systemd signals every process of a unit):
    either way the shutdown runs to its end, the call hung up, exit 0."""
    port = free_port()
    env = dict(
        os.environ,
        BRIDGE_ICE_ADDRESSES="127.0.0.1",
        BRIDGE_STUN_URLS="",
        BRIDGE_SIM_ANSWER_DELAY="0.1",
        BRIDGE_API_TOKENS="tok",
    )
    proc = await spawn_bridge(env, "--port", str(port), stdout=asyncio.subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": "Bearer tok"}
    try:
        async with aiohttp.ClientSession() as session:
            await wait_healthy(base)
            async with session.post(
                base + "/call/make", json={"phone": "5521999999999"}, headers=headers
            ) as r:
                call = await r.json()
            rtc = RtcClient(Http(session, base), call["callID"], headers=headers)
            await rtc.offer()
            await asyncio.wait_for(rtc.connected.wait(), 10)
            await asyncio.sleep(0.5)
            t_audio = time.monotonic()
            await asyncio.sleep(1.0)
            heard = rtc.recorder.since(t_audio)
            assert dominant_frequency(heard, rtc.recorder.rate) == pytest.approx(440, abs=5)
            proc.send_signal(sig)
            for _ in range(times - 1):  # while the shutdown runs
                # Blocking on purpose: this loop's own wake-up could come after the exit.
                time.sleep(0.002)  # noqa: ASYNC251
                os.kill(proc.pid, sig)
            _out, err = await asyncio.wait_for(proc.communicate(), 15)
            await rtc.close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    log = err.decode()
    assert proc.returncode == 0, log
    assert "Traceback" not in log and "ERROR" not in log, log
    assert "ended (shutdown)" in log and "stopped" in log
    # Said once at most. A standard signal does not queue: one sent while the last is still
    # pending merges with it, and on a loaded host the three sends landed as one (nothing
    # "ignored" then; exit 0 all the same). The repeat's own path is asserted where it is
    # staged alone (test_a_repeat_after_the_loop_closed_does_not_kill_the_stop).
    assert log.count("while stopping: ignored") <= (times > 1), log


async def app_script(script: str, *args: str) -> asyncio.subprocess.Process:
    """A Python process running ``script`` (an aiohttp app on the port given as its first
    argument, then ``args``), its output piped."""
    import sys

    from ..support.processes import ROOT

    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        str(free_port()),
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


STOPPED_DURING_SHUTDOWN = r"""
import asyncio, signal, sys
from aiohttp import web
from bridge.stopping import STOP, StopSignals

async def resource(app):
    yield
    print("cleaned", flush=True)

async def slow_shutdown(app):
    # What a handover drain does when it ends while the shutdown runs: it asks to stop.
    asyncio.get_running_loop().call_soon(app[STOP].stop)
    await asyncio.sleep(0.3)

async def ready(app):
    print("ready", flush=True)

app = web.Application()
app.cleanup_ctx.append(resource)
app.on_shutdown.append(slow_shutdown)
app.on_startup.append(ready)
StopSignals().install(app)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
print("stopped", flush=True)
"""


async def test_a_stop_asked_again_while_the_shutdown_runs_does_not_cut_it_short() -> None:
    """A handover drain that ends while a signal's shutdown runs asks to stop again
    (``StopSignals.stop``): once begun, the shutdown runs to its end (a second graceful exit
    raised in it skipped every resource's cleanup, exit 1)."""
    proc = await app_script(STOPPED_DURING_SHUTDOWN)
    assert proc.stdout is not None
    assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"ready\n"
    proc.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0, err.decode()
    assert out.decode().split() == ["cleaned", "stopped"], (out, err)


REPEATED_AFTER_THE_LOOP = r"""
import logging, os, signal, sys
from aiohttp import web
from bridge.stopping import StopSignals

logging.basicConfig(level=logging.WARNING)

async def ready(app):
    print("ready", flush=True)

app = web.Application()
app.on_startup.append(ready)
StopSignals().install(app)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
# The loop is closed; __main__ has yet to reach its last lines: the same stop, passed on.
os.kill(os.getpid(), signal.SIGTERM)
print("stopped", flush=True)
"""


async def test_a_repeat_after_the_loop_closed_does_not_kill_the_stop() -> None:
    """The loop's signal handlers end with it and a closed loop puts the default ones back:
    a repeat landing between the loop's close and the process's last lines ended a clean stop
    with -15 (seen on a loaded CI machine: "ignored", then killed). ``StopSignals`` hands the
    repeats to a handler of the process's own when the shutdown begins."""
    proc = await app_script(REPEATED_AFTER_THE_LOOP)
    assert proc.stdout is not None
    assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"ready\n"
    proc.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0, err.decode()
    assert out.decode().split() == ["stopped"], (out, err)
    assert err.decode().count("SIGTERM while stopping: ignored") == 1, err.decode()


STOPPED_DURING_START_UP = r"""
import asyncio, logging, sys
from aiohttp import web
from bridge.resources import drain_on_sigterm
from bridge.stopping import STOP, StopSignals
from bridge.tasks import TaskSet

logging.basicConfig(level=logging.WARNING)

class Manager:
    shutting_down = False

class Handover:
    async def drain(self):
        print("drained", flush=True)
    async def wait_unmovable(self):
        pass

async def resource(app):
    print("up", flush=True)
    tasks = TaskSet("drain")
    if sys.argv[2] == "drain":  # BRIDGE_SHUTDOWN_CALLS=handover: installed while starting
        drain_on_sigterm(Manager(), Handover(), tasks, app[STOP])
    yield
    await tasks.close()
    print("cleaned", flush=True)

async def slow_start(app):
    # A resource that takes its time (a Redis that answers slowly, an engine's log-in).
    print("starting", flush=True)
    await asyncio.sleep(1.5)
    print("started", flush=True)

app = web.Application()
app.cleanup_ctx.append(resource)
app.on_startup.append(slow_start)
StopSignals().install(app)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
print("stopped", flush=True)
"""


@pytest.mark.parametrize(
    ("shutdown", "signals", "printed", "said"),
    [
        # one stop (twice 2 ms apart, as make and systemd pass it on): after the start-up,
        # with every resource cleaned up
        ("hangup", (0.0, 0.002), ["up", "starting", "started", "cleaned", "stopped"], 1),
        # with the handover drain installed while starting: it drains once started, then stops
        ("drain", (0.0, 0.002), ["up", "starting", "started", "drained", "cleaned", "stopped"], 1),
        # a second stop 0.6 s later: the operator's, at once (nothing cleaned, nothing drained)
        ("hangup", (0.0, 0.6), ["up", "starting", "stopped"], 2),
        ("drain", (0.0, 0.6), ["up", "starting", "stopped"], 2),
    ],
)
async def test_a_stop_signal_during_the_start_up_is_acted_on_once_it_is_done(
    shutdown: str, signals: tuple[float, ...], printed: list[str], said: int
) -> None:
    """aiohttp's ``run_app`` starts the app's resources outside the ``try`` that cleans them
    up: a graceful exit raised while they start left those already up uncleaned. A stop
    signal during the start-up now waits for its end (``StopSignals``), and is then the
    handover drain's when one was installed meanwhile (before, a second SIGTERM then started
    a second drain instead of stopping)."""
    proc = await app_script(STOPPED_DURING_START_UP, shutdown)
    assert proc.stdout is not None
    assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"up\n"
    assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"starting\n"
    previous = 0.0
    for at in signals:
        await asyncio.sleep(at - previous)
        previous = at
        proc.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0, err.decode()
    assert ["up", "starting", *out.decode().split()] == printed, (out, err)
    assert err.decode().count("during start-up") == said, err.decode()
    assert err.decode().count("SIGTERM: draining") == ("drained" in printed), err.decode()
