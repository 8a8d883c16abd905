"""The worker's media sockets on the media clock (``bridge/rtc/udp_poll.py``): real sockets on
loopback, the real worker clock."""

from __future__ import annotations

import asyncio
import itertools
import socket
import statistics
import time
from typing import Any

import aioice
import pytest

from bridge.rtc import counters, hooks, polled_transport, udp_poll
from bridge.rtc.ice import restrict_host_addresses

from ..support.waits import until


class Recorder(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: list[tuple[bytes, Any, float, float]] = []
        """(data, source, handled at, arrival)"""
        self.errors: list[Exception] = []
        self.lost = 0
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.datagram_arrived(data, addr, time.monotonic())

    def datagram_arrived(self, data: bytes, addr: Any, at: float) -> None:
        """The timed handler: each datagram with its arrival (the socket's stamp)."""
        self.got.append((data, addr, time.monotonic(), at))

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost += 1


def _bound() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture
def sender() -> Any:
    sock = _bound()
    yield sock
    sock.close()


async def test_a_lone_datagram_is_read_at_once_with_its_arrival_time(sender: Any) -> None:
    proto = Recorder()
    wakeups = counters.READS["wakeup"]
    oversize = counters.UDP_DROPS["oversize"]
    transport = udp_poll.open_polled(_bound(), proto, proto.datagram_arrived)
    assert proto.transport is transport
    poller = udp_poll.poller()
    assert poller is not None and not poller.on_clock
    sender.sendto(b"one", transport.get_extra_info("sockname"))
    for _ in range(100):
        if proto.got:
            break
        await asyncio.sleep(0.001)
    ((data, source, handled, arrival),) = proto.got
    assert data == b"one" and source == sender.getsockname()
    assert 0 <= handled - arrival < 0.05  # the kernel's stamp, just before it was read
    assert counters.READS["wakeup"] - wakeups == 1 and not poller.on_clock
    sender.sendto(b"\x80" * (polled_transport.RECV_SIZE + 1), transport.get_extra_info("sockname"))
    sender.sendto(b"\x80two", transport.get_extra_info("sockname"))
    for _ in range(100):
        if len(proto.got) == 2:
            break
        await asyncio.sleep(0.001)
    assert proto.got[-1][0] == b"\x80two"
    assert counters.UDP_DROPS["oversize"] - oversize == 1  # too long: dropped
    transport.close()
    await asyncio.sleep(0)
    assert proto.lost == 1 and udp_poll.poller() is None  # the last socket: the set is gone


async def _on_the_clock(
    sender: Any, n: int, sent: list[float] | None = None
) -> tuple[Recorder, Any, udp_poll.UdpPoller, int]:
    """A polled socket sent at least ``n`` RTP-like datagrams 4 ms apart (each one's time
    appended to ``sent``), and the count sent: its set is on the clock. A loaded host that
    stretched a 4 ms sleep past a tick took the set off the clock, as it should (a tick with no
    datagram); more are sent then, until two wake-ups within a tick put it back."""
    proto = Recorder()
    transport = udp_poll.open_polled(_bound(), proto, proto.datagram_arrived)
    poller = udp_poll.poller()
    assert poller is not None
    to = transport.get_extra_info("sockname")
    i = 0
    while i < n or (not poller.on_clock and i < n + 200):
        if sent is not None:
            sent.append(time.monotonic())
        sender.sendto(bytes([0x80, i & 0xFF]), to)  # RTP's first byte: media
        i += 1
        await asyncio.sleep(0.004)
    assert poller.on_clock
    return proto, transport, poller, i


async def test_datagrams_faster_than_the_ticks_are_read_on_the_clock(
    sender: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A datagram every 4 ms: after two wake-ups within a tick the set is read once per tick,
    several datagrams at a time, each still with its own arrival (4 ms apart, not 0 or 20);
    once a whole tick brings nothing, each datagram wakes the loop again."""
    leaves: list[bool] = []
    leave_clock = udp_poll.UdpPoller._leave_clock

    def counted(poller: udp_poll.UdpPoller) -> None:
        leaves.append(poller.on_clock)
        leave_clock(poller)

    monkeypatch.setattr(udp_poll.UdpPoller, "_leave_clock", counted)
    reads = counters.READS.copy()
    sent: list[float] = []
    proto, transport, poller, count = await _on_the_clock(sender, 60, sent)
    left = sum(leaves)  # times a loaded host's stretched sleep took the set off the clock
    await asyncio.sleep(0.08)
    assert not poller.on_clock  # a tick without a datagram: back to waking per datagram
    assert [g[0][1] for g in proto.got] == [i & 0xFF for i in range(count)]
    reads.subtract(counters.READS)  # bridge_udp_reads_total{how}, negated
    # Two wake-ups put the set on the clock, and two more each time a tick found nothing (a
    # sleep of the sender's stretched past a tick on a loaded host: four such in one run cost
    # ten wake-ups), a third when the host stretched the sleep between those two as well.
    # Waking per datagram would be one a datagram: sixty here.
    assert -reads["wakeup"] <= 3 * (left + 1), (reads, left)
    assert -reads["tick"] > left + 5  # most ticks found media
    handled = [g[2] for g in proto.got]
    run = longest = 1
    for a, b in itertools.pairwise(handled):
        run = run + 1 if b - a < 0.001 else 1  # handed on in one read
        longest = max(longest, run)
    assert longest >= 3  # several datagrams in one tick
    # Each datagram's own arrival: the kernel's stamp, within a millisecond of its sending on
    # loopback, however late the loop read it (a sender's 4 ms that a loaded host stretches
    # to 8 are 8 here too); a read's time would be the same for a whole batch.
    off = [g[3] - at for g, at in zip(proto.got, sent, strict=True)]
    assert statistics.median(abs(o) for o in off) < 0.001, off
    gaps = [b[3] - a[3] for a, b in itertools.pairwise(proto.got)]
    assert statistics.median(gaps) > 0.003, gaps
    to = transport.get_extra_info("sockname")
    sender.sendto(b"\x80late", to)
    await asyncio.sleep(0.01)
    assert proto.got[-1][0] == b"\x80late"  # read at once again
    transport.close()


async def test_upkeep_datagrams_never_put_the_set_on_the_clock(sender: Any) -> None:
    """RTCP, STUN and DTLS 4 ms apart (an idle leg's reports, consent checks and their answers
    arriving together; twenty idle legs'): each read at once as it comes, no tick taken, each
    with its own arrival; the first RTP pair after them puts the set on the clock."""
    proto = Recorder()
    transport = udp_poll.open_polled(_bound(), proto, proto.datagram_arrived)
    poller = udp_poll.poller()
    assert poller is not None
    to = transport.get_extra_info("sockname")
    reads = counters.READS.copy()
    upkeep = [bytes([0x80, 200]) + bytes(6), b"\x00\x01" + bytes(18), b"\x81\xc9" + bytes(6)]
    sent = []
    for i in range(30):
        sent.append(time.monotonic())
        sender.sendto(upkeep[i % 3], to)  # an RTCP RR, a STUN request, an RTCP RR with a block
        await asyncio.sleep(0.004)
        assert not poller.on_clock
    await until(lambda: len(proto.got) == 30, 1.0, "the upkeep datagrams")
    reads.subtract(counters.READS)
    assert -reads["tick"] == 0 and -reads["wakeup"] >= 15  # each read as it came (or nearly)
    # Their own stamps, not the reads': each within a millisecond or two of its sending on
    # loopback, at whatever pace a loaded host makes of the 4 ms sleeps (a median gap of the
    # stamps was asserted before: beside a full suite the sleeps themselves stretched it).
    lags = [got[3] - at for got, at in zip(proto.got, sent, strict=True)]
    assert all(lag > -0.001 for lag in lags) and statistics.median(lags) < 0.002, lags
    for i in range(3):
        sender.sendto(bytes([0x80, i]), to)  # media
        await asyncio.sleep(0.004)
    assert poller.on_clock
    transport.close()


async def test_a_handshake_datagram_takes_the_set_off_the_clock(sender: Any) -> None:
    """A STUN or DTLS datagram read on a tick (a call setting up beside others): the set
    wakes per datagram again, so the handshake's next flight is read at once."""
    proto, transport, poller, _ = await _on_the_clock(sender, 10)
    to = transport.get_extra_info("sockname")
    sender.sendto(b"\x16\xfe\xfd", to)  # a DTLS record
    sender.sendto(bytes([0x80, 10]), to)
    await asyncio.sleep(0.03)
    assert not poller.on_clock
    sender.sendto(b"\x16\xfe\xfd next flight", to)
    await asyncio.sleep(0.003)
    assert proto.got[-1][0] == b"\x16\xfe\xfd next flight"  # at once, not at a tick
    transport.close()


async def test_stun_once_the_checks_are_over_is_consent_not_a_handshake(sender: Any) -> None:
    """An ICE socket whose connection nominated its pair: a STUN datagram is a consent check
    (RFC 7675), no handshake's flight (a read that finds it keeps the set on the clock); DTLS,
    or STUN while the checks run, is a handshake's (it takes the set off the clock: above)."""
    over = [True]
    proto = Recorder()
    transport = udp_poll.open_polled(_bound(), proto, proto.datagram_arrived, lambda: over[0])
    poller = udp_poll.poller()
    assert poller is not None
    to = transport.get_extra_info("sockname")
    seen = []
    for data, checks_over in (
        (b"\x00\x01 consent check", True),  # a STUN Binding request
        (b"\x00\x01 check", False),
        (b"\x16\xfe\xfd", True),  # a DTLS record
    ):
        over[0] = checks_over
        sender.sendto(data, to)  # loopback: in the socket's queue when sendto returns
        assert poller.read() == 1  # read here, before the loop could
        seen.append(poller.handshake)
    assert seen == [False, True, True]
    assert [g[0] for g in proto.got][-3:] == [
        b"\x00\x01 consent check",
        b"\x00\x01 check",
        b"\x16\xfe\xfd",
    ]
    transport.close()


async def test_a_parked_legs_socket_is_read_in_batches_and_at_once_again_when_lent(
    sender: Any,
) -> None:
    """A parked leg's socket (``batch(True)``): a lone datagram is read at once; once two come
    within ``BATCH`` they are read every ``BATCH`` on the worker clock, several a read, each
    with its own arrival and none waiting longer than ``BATCH`` (plus a loaded host's lag);
    a quiet batch goes back to a wake-up each. ``batch(False)`` (the leg lent to a call): read
    at once again, a sibling socket's reads untouched throughout."""
    parked, other = Recorder(), Recorder()
    transport = udp_poll.open_polled(_bound(), parked, parked.datagram_arrived)
    sibling = udp_poll.open_polled(_bound(), other, other.datagram_arrived)
    to, to_sibling = transport.get_extra_info("sockname"), sibling.get_extra_info("sockname")
    transport.batch(True)
    reads = counters.READS.copy()
    sender.sendto(b"\x81\xc9lone", to)  # an RTCP report, alone
    await until(lambda: len(parked.got) == 1, 1.0, "the lone datagram")
    assert parked.got[0][2] - parked.got[0][3] < 0.05  # at once
    for i in range(40):  # upkeep of many parked legs: one every 10 ms
        sender.sendto(bytes([0x81, 0xC9, i]), to)
        await asyncio.sleep(0.01)
    sender.sendto(b"\x81\xc9sibling", to_sibling)
    await until(lambda: len(other.got) == 1, 1.0, "the sibling's datagram")
    assert other.got[0][2] - other.got[0][3] < 0.05  # a sibling's socket: at once
    await until(lambda: len(parked.got) == 41, 1.0, "the batched datagrams")
    reads.subtract(counters.READS)
    assert -reads["parked_batch"] >= 1 and -reads["parked_wakeup"] < 20
    waits = [g[2] - g[3] for g in parked.got[1:]]
    assert max(waits) < udp_poll.BATCH + 0.1 and statistics.median(waits) > 0.01
    gaps = [b[3] - a[3] for a, b in itertools.pairwise(parked.got[1:])]
    assert 0.008 < statistics.median(gaps) < 0.02  # their own stamps, not the reads'
    await asyncio.sleep(2 * udp_poll.BATCH)  # a quiet batch: a wake-up each again
    sender.sendto(b"\x81\xc9quiet", to)
    await until(lambda: len(parked.got) == 42, 1.0, "the datagram after a quiet while")
    assert parked.got[-1][2] - parked.got[-1][3] < 0.05
    transport.batch(False)
    for i in range(5):
        sender.sendto(bytes([0x81, 0xC9, i]), to)
        await asyncio.sleep(0.01)
    await until(lambda: len(parked.got) == 47, 1.0, "the lent leg's datagrams")
    assert all(g[2] - g[3] < 0.05 for g in parked.got[-5:])  # at once
    transport.batch(True)
    transport.close()  # closed while parked: out of the second set
    sibling.close()
    await asyncio.sleep(0)
    assert udp_poll.poller() is None


async def test_a_full_send_buffer_drops_the_datagram_and_errors_reach_the_protocol(
    sender: Any,
) -> None:
    proto = Recorder()
    transport = udp_poll.open_polled(_bound(), proto, proto.datagram_arrived)

    class Full:
        def sendto(self, data: bytes, addr: Any) -> None:
            raise BlockingIOError

    full = counters.UDP_DROPS["send_buffer_full"]
    real, transport._sock = transport._sock, Full()
    transport.sendto(b"x", ("127.0.0.1", 9))
    assert counters.UDP_DROPS["send_buffer_full"] - full == 1 and not proto.errors
    transport._sock = real
    transport.sendto(b"x", ("127.0.0.1", 0))  # port 0: the kernel refuses (EINVAL)
    assert len(proto.errors) == 1 and isinstance(proto.errors[0], OSError)
    transport.sendto(b"hello", sender.getsockname())
    assert sender.recv(16) == b"hello"
    transport.close()
    transport.close()
    transport.sendto(b"after", sender.getsockname())  # closed: nothing sent, nothing raised
    await asyncio.sleep(0)
    assert proto.lost == 1


async def test_a_failing_handler_is_said_once_and_reading_goes_on(
    sender: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A handler that raises on every datagram (a bug): the first failure is logged with its
    traceback, the rest only counted, and the datagrams after it still reach the handler."""

    class Failing(Recorder):
        def datagram_arrived(self, data: bytes, addr: Any, at: float) -> None:
            super().datagram_arrived(data, addr, at)
            raise ValueError("a bug")

    proto = Failing()
    failed = counters.UDP_DROPS["handler_failed"]
    transport = udp_poll.open_polled(_bound(), proto, proto.datagram_arrived)
    to = transport.get_extra_info("sockname")
    for i in range(3):
        sender.sendto(bytes([0x80, i]), to)
    for _ in range(100):
        if len(proto.got) == 3:
            break
        await asyncio.sleep(0.001)
    assert [g[0][1] for g in proto.got] == [0, 1, 2]
    assert counters.UDP_DROPS["handler_failed"] - failed == 3
    said = [r for r in caplog.records if "handler failed" in r.getMessage()]
    assert len(said) == 1 and said[0].exc_info is not None
    transport.close()


async def test_a_read_that_raises_on_the_clock_goes_back_to_wake_ups(
    sender: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A tick whose read raises (a bug outside the handlers' guard): the clock drops it, and
    the set is read as datagrams wake the loop again. Before, the poller still believed it was
    on the clock: no socket of the worker was read again, every call silent."""
    proto, transport, poller, _ = await _on_the_clock(sender, 30)
    real = poller._read

    def broken(epoll: Any) -> int:
        poller._read = real  # once
        raise RuntimeError("a bug")

    poller._read = broken  # type: ignore[method-assign]
    await until(lambda: not poller.on_clock)
    assert any("a tick failed" in r.getMessage() for r in caplog.records)
    n = len(proto.got)
    sender.sendto(b"\x80after", transport.get_extra_info("sockname"))
    await until(lambda: len(proto.got) > n)
    assert proto.got[-1][0] == b"\x80after"
    transport.close()


async def test_aioice_connects_over_polled_sockets() -> None:
    """Host candidates' sockets are the poller's (the seam's loop for aioice), and two agents
    complete ICE and exchange data over them."""
    hooks.install()
    restrict_host_addresses(["127.0.0.1"])
    try:
        a = aioice.Connection(ice_controlling=True)
        b = aioice.Connection(ice_controlling=False)
        await asyncio.gather(a.gather_candidates(), b.gather_candidates())
        for c in a.local_candidates:
            await b.add_remote_candidate(c)
        for c in b.local_candidates:
            await a.add_remote_candidate(c)
        await a.add_remote_candidate(None)
        await b.add_remote_candidate(None)
        a.remote_username, a.remote_password = b.local_username, b.local_password
        b.remote_username, b.remote_password = a.local_username, a.local_password
        poller = udp_poll.poller()
        assert poller is not None and len(poller._transports) == 2  # one host socket each
        await asyncio.wait_for(asyncio.gather(a.connect(), b.connect()), 10)
        rtp = bytes([0x80, 111]) + bytes(10) + b"over the poller"  # the UDP guard lets RTP by
        await a.send(rtp)
        assert await asyncio.wait_for(b.recv(), 5) == rtp
        await asyncio.gather(a.close(), b.close())
        assert udp_poll.poller() is None
    finally:
        restrict_host_addresses([])


async def test_aioices_long_sleeps_end_on_the_parked_grid_and_short_ones_are_the_loops() -> None:
    """The consent checks' sleep (``rtc/ice.py``): a second or more ends on the worker clock at
    the first point of the 0.2 s grid after it, never sooner; a cancelled one leaves nothing on
    the clock; the checks' 20 ms pacing is asyncio's own sleep."""
    from bridge.media.clock import worker_clock
    from bridge.rtc.ice import ASYNCIO_FOR_AIOICE

    clock = worker_clock()
    started = time.monotonic()
    assert await ASYNCIO_FOR_AIOICE.sleep(1.0, "slept") == "slept"
    ended = time.monotonic()
    assert ended - started >= 1.0 - 0.005
    assert clock.n > 0 and not clock.running  # a one-shot callback's tick, then asleep
    grid = round(clock.now / udp_poll.BATCH) * udp_poll.BATCH
    assert abs(clock.now - grid) < 0.021  # the tick of a grid point
    task = asyncio.ensure_future(ASYNCIO_FOR_AIOICE.sleep(5.0))
    await asyncio.sleep(0.01)
    assert clock._timers  # waiting on the clock
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not clock._timers  # its callback went with it
    assert ASYNCIO_FOR_AIOICE.sleep is not asyncio.sleep
    assert await ASYNCIO_FOR_AIOICE.sleep(0.02, 3) == 3
