"""RFC 4733's one packetizer (``rtc/rfc4733.py`` ``KeyPresses``): what every leg sends for a
key press, tick by tick, read back by the one detector."""

from __future__ import annotations

from bridge.rtc.rfc4733 import END_REPEATS, DtmfDetector, KeyPresses, event_payload


def test_a_press_is_a_packet_a_tick_its_duration_growing_and_its_end_marked() -> None:
    presses = KeyPresses()
    presses.press("5", 100)
    packets = []
    while (packet := presses.next_packet()) is not None:
        packets.append(packet)
    assert [p.first for p in packets] == [True, False, False, False, False]
    assert [p.end for p in packets] == [False, False, False, False, True]
    assert [int.from_bytes(p.payload[2:4], "big") for p in packets] == [160, 320, 480, 640, 800]
    assert {p.payload[0] for p in packets} == {5}
    assert packets[-1].payload[1] & 0x80 and not packets[0].payload[1] & 0x80
    assert presses.presses == 1 and not presses.pending


def test_the_detector_reads_back_each_press_once_whatever_the_end_repeats() -> None:
    heard: list[tuple[str, int]] = []
    detector = DtmfDetector(lambda digit, ms: heard.append((digit, ms)), 8000)
    presses = KeyPresses()
    for digit in "#7D":
        presses.press(digit, 160)
    timestamp = 0
    while (packet := presses.next_packet()) is not None:
        if packet.first:
            timestamp += 8000
        for _ in range(END_REPEATS if packet.end else 1):
            detector.feed(timestamp, packet.payload)
    assert heard == [("#", 160), ("7", 160), ("D", 160)]


def test_a_press_longer_than_the_duration_field_is_one_press_of_its_segments() -> None:
    """A press held past 0xFFFF units (1.37 s on a 48 kHz event clock, a trunk's Opus; 8.2 s
    at 8 kHz) comes as segments (RFC 4733 §2.5.1.5): a packet of the largest duration without
    the end bit, then the same event from the segment's end on, a new timestamp, its duration
    counted afresh. One press, its segments' durations added: each segment was a press of its
    own (a 2 s "5" heard as "55"), and a repeat of the full segment's last packet after the
    next one began a third."""
    heard: list[tuple[str, int]] = []
    detector = DtmfDetector(lambda digit, ms: heard.append((digit, ms)), 48_000)
    start = 1_000_000
    for duration in range(960, 0xFFFF, 960 * 10):  # the first segment, growing
        detector.feed(start, event_payload(5, False, duration))
    for _ in range(END_REPEATS):  # its largest duration, repeated as an end packet would be
        detector.feed(start, event_payload(5, False, 0xFFFF))
    second = start + 0xFFFF
    detector.feed(second, event_payload(5, False, 960))
    detector.feed(start, event_payload(5, False, 0xFFFF))  # a late repeat of the first's last
    assert heard == []
    for _ in range(END_REPEATS):
        detector.feed(second, event_payload(5, True, 30_465))  # 0.635 s more: 2 s in all
    assert heard == [("5", 2000)] and detector.presses == 1
    detector.feed(start, event_payload(5, False, 0xFFFF))  # later still: the press is over
    assert heard == [("5", 2000)] and not detector.open
    detector.feed(start + 96_000 + 48_000, event_payload(5, True, 960))  # the next press
    assert heard == [("5", 2000), ("5", 20)]


def test_a_press_longer_than_the_duration_field_goes_as_segments() -> None:
    """The sender's side of RFC 4733 §2.5.1.5: a 2 s press on a 48 kHz event clock (a trunk's
    Opus; 0xFFFF units are 1.37 s) is a full segment (its last packet of the largest duration,
    no end bit, sent three times as an end packet is: its loss would split the press), then a
    segment from where that one ended, its duration counted afresh, no marker. Before, the
    duration stuck at 0xFFFF under one timestamp: the press was heard as 1.37 s."""
    presses = KeyPresses(payload_type=lambda: 102, step=960)
    presses.press("5", 2000)
    sent: list[tuple[bytes, int, bool]] = []
    tick = 0
    while presses.send_tick(5000 + 960 * tick, lambda pt, p, ts, m: sent.append((p, ts, m))):
        tick += 1
    durations = [int.from_bytes(p[2:4], "big") for p, _, _ in sent]
    ends = [bool(p[1] & 0x80) for p, _, _ in sent]
    first = [(d, ts) for (_, ts, _), d in zip(sent, durations, strict=True) if ts == 5000]
    second = [(d, ts) for (_, ts, _), d in zip(sent, durations, strict=True) if ts != 5000]
    assert first[-3:] == [(0xFFFF, 5000)] * 3 and not any(ends[: len(first)])
    assert {ts for _, ts in second} == {5000 + 0xFFFF}  # where the full segment ended
    assert [d for d, _ in second][-3:] == [96_000 - 0xFFFF] * 3 and ends[-3:] == [True] * 3
    assert [m for *_, m in sent].count(True) == 1 and sent[0][2]
    heard: list[tuple[str, int]] = []
    detector = DtmfDetector(lambda digit, ms: heard.append((digit, ms)), 48_000)
    for payload, ts, _ in sent:
        detector.feed(ts, payload)
    assert heard == [("5", 2000)]


def test_presses_beyond_the_bound_drop_the_oldest_and_are_counted() -> None:
    presses = KeyPresses(limit=2)
    for digit in "123":
        presses.press(digit, 40)
    assert presses.dropped == 1
    events = []
    while (packet := presses.next_packet()) is not None:
        if packet.first:
            events.append(packet.payload[0])
    assert events == [2, 3]


def test_a_tick_sends_the_press_in_place_of_audio_then_its_gap_then_says_done() -> None:
    """``send_tick``, what every leg's clocked sender calls: the press's first tick's RTP time
    held, the marker on the first packet, the end three times in its tick; the gap's ticks are
    audio's; ``done`` once the gap is over."""
    presses = KeyPresses(payload_type=lambda: 101)
    done: list[int] = []
    presses.press("9", 60, gap_ms=40, done=lambda: done.append(tick))
    sent: list[tuple[int, int, bytes, int, bool]] = []
    audio = []
    for tick in range(8):
        pts = 1000 + 960 * tick

        def send(pt: int, payload: bytes, ts: int, marker: bool, tick: int = tick) -> None:
            sent.append((tick, pt, payload, ts, marker))

        if not presses.send_tick(pts, send):
            audio.append(tick)
    assert [t for t, *_ in sent] == [0, 1, 2, 2, 2]  # one tick each, the end's repeated
    assert {(pt, ts) for _, pt, _, ts, _ in sent} == {(101, 1000)}
    assert [m for *_, m in sent] == [True, False, False, False, False]
    assert [int.from_bytes(p[2:4], "big") for _, _, p, _, _ in sent] == [160, 320, 480, 480, 480]
    assert audio == [3, 4, 5, 6, 7] and done == [4]  # the gap: ticks 3 and 4
    assert presses.packets == 5 and not presses.pending


def test_a_second_press_holds_its_own_start_on_the_events_own_clock() -> None:
    presses = KeyPresses(payload_type=lambda: 96, step=320)  # telephone-event/16000
    presses.press("1", 20)
    presses.press("2", 40)
    sent = []
    for tick in range(4):
        presses.send_tick(tick * 960, lambda pt, p, ts, m: sent.append((p[0], p[2:4], ts, m)))
    one, two = (320).to_bytes(2, "big"), (640).to_bytes(2, "big")
    # A one-tick press: its first packet is its end, sent three times, the marker once.
    assert sent[:3] == [(1, one, 0, True), (1, one, 0, False), (1, one, 0, False)]
    assert sent[3:] == [(2, one, 960, True)] + [(2, two, 960, False)] * 3


def test_with_no_telephone_event_negotiated_the_presses_go_and_the_ticks_are_audio() -> None:
    presses = KeyPresses()  # payload_type() is None
    presses.press("5", 100)
    sent: list[object] = []
    assert not presses.send_tick(0, lambda *a: sent.append(a))
    assert not sent and not presses.pending


def test_an_end_packet_reordered_behind_the_next_press_ends_its_own_press() -> None:
    """A press's end packets arriving after the next press's first packets (reordered on the
    way, or a late repeat) end that press, not the next one: each press reported once, in
    order, with its own duration. Before, the late end packet of "1" cut "2" short and was
    taken for a press of its own: "1", "2", "1", "2"."""
    presses = KeyPresses()
    presses.press("1", 100)
    presses.press("2", 100)
    sent: list[tuple[int, bytes, bool]] = []  # each packet as sent: timestamp, payload, end
    timestamp = 0
    while (packet := presses.next_packet()) is not None:
        timestamp += 8000 if packet.first else 0
        sent += [(timestamp, packet.payload, packet.end)] * (END_REPEATS if packet.end else 1)
    one = [p for p in sent if p[0] == 8000]
    two = [p for p in sent if p[0] == 16_000]
    assert (len(one), len(two)) == (5 + 2, 5 + 2)
    orders = {
        "the ends after the next press's first packet": one[:4] + two[:1] + one[4:] + two[1:],
        "the ends after its second, one lost": one[:4] + two[:2] + one[5:] + two[2:],
        "a repeat of the end after the next press's first": one[:5] + two[:1] + one[5:] + two[1:],
    }

    def heard(packets: list[tuple[int, bytes, bool]]) -> list[tuple[str, int]]:
        keys: list[tuple[str, int]] = []
        detector = DtmfDetector(lambda digit, ms: keys.append((digit, ms)), 8000)
        for ts, payload, _ in packets:
            detector.feed(ts, payload)
        assert detector.presses == len(keys) and not detector.open
        return keys

    for order, packets in orders.items():
        assert heard(packets) == [("1", 100), ("2", 100)], order
    # Every end packet of "1" lost: reported before "2", with the duration it had reached.
    assert heard([p for p in sent if not (p[2] and p[0] == 8000)]) == [("1", 80), ("2", 100)]
